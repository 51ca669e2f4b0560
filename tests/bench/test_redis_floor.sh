#!/usr/bin/env bash
# test_redis_floor.sh - bench/redis_floor.lua sends, per decision, the same Redis
# commands as the store's own scripts (server/redis/) driven by bench/redis_ledger,
# so the floor bench/redis_floor.sh reports stays the floor of today's scripts.
#
#   test_redis_floor.sh REDIS_LEDGER_BINARY
#
# Starts its own redis-server (no persistence) on a free 127.0.0.1 port, records the
# commands scripts run with MONITOR, and stops both by pid on exit. Prints one line
# per behaviour; exits 1 on the first failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ledger=${1:?usage: test_redis_floor.sh REDIS_LEDGER_BINARY}
fail() { echo "FAIL: $*"; exit 1; }
die() { fail "$@"; }
keep_logs=0
source "$root/bench/lib.sh"
bench_init discern-redis-floor
redis_up "$tmp" --appendonly no
port=$redis_port
cli() { redis-cli -p "$port" "$@"; }

# monitor FILE: record what scripts run until stop_monitor.
monitor() { cli MONITOR >"$1" 2>/dev/null & mon=$!; pids+=("$mon"); sleep 0.3; }
stop_monitor() { sleep 0.3; stop_pid "$mon"; }
# per_decision FILE N: "COUNT COMMAND" per decision of the commands scripts ran.
per_decision() {
    awk -v n="$2" '$3 == "lua]" { c[toupper($4)]++ }
        END { for (k in c) if (c[k] / n >= 0.5) printf "%.0f %s\n", c[k] / n, k }' "$1" | tr -d '"' | sort -k2
}

sha=$(cli SCRIPT LOAD "$(cat "$root/bench/redis_floor.lua")")
monitor "$tmp/floor.txt"
for i in 1 2 3 4 5 6 7 8 9 10; do
    cli EVALSHA "$sha" 0 reserve "h$i" 1 >/dev/null
    cli EVALSHA "$sha" 0 settle "h$i" 1 >/dev/null
done
stop_monitor
[ "$(cli EVALSHA "$sha" 0 empty x 1)" = 1 ] || fail "the empty part runs"
floor=$(per_decision "$tmp/floor.txt" 10)
[ -n "$floor" ] || fail "the floor script ran no command"

cli FLUSHALL >/dev/null
monitor "$tmp/store.txt"
out=$("$ledger" --url "redis://127.0.0.1:$port" --connections 1 --pipeline 1 --seconds 1)
stop_monitor
n=$(sed -n 's/.*decisions=\([0-9]*\) .*/\1/p' <<<"$out" | tail -1)
[ "${n:-0}" -ge 100 ] || fail "redis_ledger made too few decisions to count: $out"
store=$(per_decision "$tmp/store.txt" "$n")
[ "$floor" = "$store" ] ||
    fail "commands per decision differ: floor script
$floor
store's scripts ($n decisions)
$store"
echo "PASS: the_floor_script_sends_per_decision_the_commands_the_stores_scripts_send"
