#!/usr/bin/env bash
# redis_store.sh - what the Redis ledger store costs Redis per decision, and whether
# two replicas sharing one Redis can overshoot a budget.
#
#   bench/redis_store.sh [--seconds S] [--connections N] [--pipeline N] [--no-build]
#                        [--redis-ledger PATH]
#
# Starts one redis-server (appendonly yes, appendfsync everysec, no RDB saves) on a
# free loopback port in a temporary folder and runs bench/redis_ledger, which drives
# the ledger's own scripts (server/redis/) through the server's connection code: a
# reserve over three counters (month, day, rolling) with the decision's journal
# record, then the settle of the actual. Rows:
#   one replica   decisions/s, Redis CPU µs per decision, replica CPU µs per decision
#   two replicas  two redis_ledger processes at once on a budget small enough to
#                 refuse: decisions/s, and whether used + held ever passed the limit
#   peer          bench/redis_check.lua with redis-benchmark (one call per decision):
#                 the machine's speed of the moment, to read the other rows against
# Redis's CPU comes from /proc/<pid>/stat around each run. --redis-ledger runs
# another build's bench/redis_ledger (the scripts it embeds: e.g. the ones before a
# change). Every process started here is stopped by pid on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=5
connections=8
pipeline=16
build=1
keep_logs=0
ledger_bin=

die() { echo "redis_store.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) [ $# -ge 2 ] || die "--seconds needs a value"; seconds=$2; shift ;;
        --connections) [ $# -ge 2 ] || die "--connections needs a value"; connections=$2; shift ;;
        --pipeline) [ $# -ge 2 ] || die "--pipeline needs a value"; pipeline=$2; shift ;;
        --no-build) build=0 ;;
        --redis-ledger) [ $# -ge 2 ] || die "--redis-ledger needs a path"; ledger_bin=$2; shift ;;
        --help|-h) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

source "$root/bench/lib.sh"
bench_init discern-redis-bench
build_release redis_ledger
ledger=${ledger_bin:-$bin/redis_ledger}
[ -x "$ledger" ] || die "no redis_ledger at $ledger"
command -v redis-server >/dev/null || die "redis-server is not installed (scripts/deps.sh)"

redis_up "$tmp" --appendonly yes --appendfsync everysec
port=$redis_port


field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }

url="redis://127.0.0.1:$port"

# The same Redis running bench/redis_check.lua (one script call, the peer of bench/run.sh):
# the machine's speed of the moment, to read the rows below against.
peer_row() {
    local sha r0 r1 n=$((20000 * seconds))
    redis-cli -p "$port" HSET factors:gpt-4o in 10 out 400 >/dev/null
    redis-cli -p "$port" HSET budget:1 used 0 limit 1000000000000000000 >/dev/null
    sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$root/bench/redis_check.lua")")
    r0=$(cpu_seconds "$redis_pid")
    line=$(timeout $((seconds * 10 + 30)) redis-benchmark -p "$port" -c "$connections" -P "$pipeline" \
        -n "$n" -q EVALSHA "$sha" 1 budget:1 gpt-4o 1200 800 | tr '\r' '\n' | tail -1)
    r1=$(cpu_seconds "$redis_pid")
    printf '%-34s %12s %18.1f %20s %10s\n' "peer: redis_check.lua, one call" \
        "$(sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' <<<"$line" | cut -d. -f1)" \
        "$(echo "($r1 - $r0) * 1000000 / $n" | bc -l)" "-" "-"
    redis-cli -p "$port" flushall >/dev/null
}
echo "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), appendfsync everysec;" \
     "$connections connections x pipeline $pipeline per replica, $seconds s per run"
printf '%-34s %12s %18s %20s %10s\n' "row" "decisions/s" "Redis CPU us/dec" "replica CPU us/dec" "overshoot"
peer_row

r0=$(cpu_seconds "$redis_pid")
out=$("$ledger" --url "$url" --connections "$connections" --pipeline "$pipeline" \
      --seconds "$seconds" --tag one)
r1=$(cpu_seconds "$redis_pid")
n=$(field decisions "$out")
printf '%-34s %12s %18.1f %20.1f %10s\n' "one replica (Redis store)" "$(field decisions_per_s "$out")" \
    "$(echo "($r1 - $r0) * 1000000 / $n" | bc -l)" \
    "$(echo "$(field client_cpu_s "$out") * 1000000 / $n" | bc -l)" "$(field overshoot "$out")"

redis-cli -p "$port" flushall >/dev/null
limit=20000000 # 20 units in holds of 1000..1999 micro: refused well before the run ends
r0=$(cpu_seconds "$redis_pid")
"$ledger" --url "$url" --connections "$connections" --pipeline "$pipeline" \
    --seconds "$seconds" --limit "$limit" --tag a >"$tmp/a.out" &
a=$!
"$ledger" --url "$url" --connections "$connections" --pipeline "$pipeline" \
    --seconds "$seconds" --limit "$limit" --tag b >"$tmp/b.out" &
b=$!
wait "$a" "$b"
r1=$(cpu_seconds "$redis_pid")
oa=$(cat "$tmp/a.out") ob=$(cat "$tmp/b.out")
n=$(( $(field decisions "$oa") + $(field decisions "$ob") ))
rate=$(echo "$(field decisions_per_s "$oa") + $(field decisions_per_s "$ob")" | bc -l)
over=no
[ "$(field overshoot "$oa")" = no ] && [ "$(field overshoot "$ob")" = no ] || over=YES
printf '%-34s %12.0f %18.1f %20s %10s\n' "two replicas, one budget" "$rate" \
    "$(echo "($r1 - $r0) * 1000000 / $n" | bc -l)" "-" "$over"
echo "two replicas: refused $(( $(field refused "$oa") + $(field refused "$ob") )) of $n;" \
     "used $(field used "$ob") + held $(field held "$ob") of limit $limit"
