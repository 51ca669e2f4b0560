#!/usr/bin/env bash
# test_redis_pair.sh - the Redis peer of bench/run.sh does what discernd does per
# decision: bench/redis_reserve.lua holds all or nothing, idempotent by id;
# bench/redis_settle.lua replaces the hold by the actual, idempotent by id; and
# bench/redis_pair drives them with every hold accounted for.
#
#   test_redis_pair.sh REDIS_PAIR_BINARY
#
# Starts its own redis-server (no persistence) on a free 127.0.0.1 port and stops it
# by pid on exit. Prints one line per behaviour; exits 1 on the first failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
pair=${1:?usage: test_redis_pair.sh REDIS_PAIR_BINARY}
fail() { echo "FAIL: $*"; exit 1; }
die() { fail "$@"; }
keep_logs=0
source "$root/bench/lib.sh"
bench_init discern-redis-test
redis_up "$tmp" --appendonly no
port=$redis_port pid=$redis_pid
cli() { redis-cli -p "$port" "$@"; }

expect() { # expect WHAT GOT WANT
    [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}
pass() { echo "PASS: $*"; }

reserve=$(cli SCRIPT LOAD "$(cat "$root/bench/redis_reserve.lua")")
settle=$(cli SCRIPT LOAD "$(cat "$root/bench/redis_settle.lua")")
cli HSET factors:gpt-4o in 10 out 400 >/dev/null
# 1200 * 10 + 800 * 400 = 332000 per reserve; room for exactly three
cli HSET budget:000000000000 used 0 held 0 limit 1000000 >/dev/null
b=budget:000000000000

expect reserve "$(cli EVALSHA "$reserve" 2 hold:a $b a gpt-4o 1200 800 1000 600)" 1
expect held "$(cli HGET $b held)" 332000
expect "expiry set" "$(cli ZSCORE holds:expiry a)" 1600
expect "repeated reserve" "$(cli EVALSHA "$reserve" 2 hold:a $b a gpt-4o 1200 800 1000 600)" 1
expect "held after the repeat" "$(cli HGET $b held)" 332000
pass reserve_holds_the_upper_bound_once_per_id

cli EVALSHA "$reserve" 2 hold:b $b b gpt-4o 1200 800 1000 600 >/dev/null
cli EVALSHA "$reserve" 2 hold:c $b c gpt-4o 1200 800 1000 600 >/dev/null
expect "over budget" "$(cli EVALSHA "$reserve" 2 hold:d $b d gpt-4o 1200 800 1000 600)" 0
expect "held after a refusal" "$(cli HGET $b held)" 996000
expect "no hold for a refusal" "$(cli EXISTS hold:d)" 0
pass reserve_over_budget_is_refused_and_holds_nothing

# actual: 1200 * 10 + 100 * 400 = 52000
expect settle "$(cli EVALSHA "$settle" 1 hold:a a 1200 100)" 52000
expect "used" "$(cli HGET $b used)" 52000
expect "held after settle" "$(cli HGET $b held)" 664000
expect "repeated settle" "$(cli EVALSHA "$settle" 1 hold:a a 1200 100)" 52000
expect "used after the repeat" "$(cli HGET $b used)" 52000
expect "expiry entry gone" "$(cli ZSCORE holds:expiry a)" ""
pass settle_replaces_the_hold_by_the_actual_once_per_id

out=$(cli EVALSHA "$settle" 1 hold:zz zz 1 1 2>&1 || true)
[[ "$out" == *unknown_reservation* ]] || fail "unknown settle: got '$out'"
pass settle_of_an_unknown_id_is_an_error

cli HSET budget:000000000000 used 0 held 0 limit 1000000000000000000 >/dev/null
cli DEL holds:expiry >/dev/null
result=$("$pair" --port "$port" --reserve "$reserve" --settle "$settle" -c 4 -P 4 -d 1 \
    --warmup 0.2 --server-pid "$pid" --kv | grep '^RESULT ')
[[ "$result" == *" errors=0 "* ]] || fail "redis_pair errors: $result"
decisions=$(sed -n 's/.* check_rps=\([0-9]*\).*/\1/p' <<<"$result")
[ "${decisions:-0}" -gt 0 ] || fail "redis_pair made no decisions: $result"
open=$(cli ZCARD holds:expiry)
expect "held equals the holds still open" "$(cli HGET $b held)" "$((open * 332000))"
pass redis_pair_settles_what_it_reserved_and_every_open_hold_is_accounted_for
