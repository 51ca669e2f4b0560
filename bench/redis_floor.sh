#!/usr/bin/env bash
# redis_floor.sh - the least Redis can spend per decision of the Redis store: the
# same commands in a script that does nothing else, beside the store's own scripts.
#
#   bench/redis_floor.sh [--requests N] [--batch K] [--appendonly] [--no-build]
#                        [--keep-logs]
#
# Starts one redis-server (no persistence, or AOF everysec with --appendonly) on a
# free loopback port in a temporary folder, loads bench/redis_floor.lua and runs
# redis-benchmark on it (8 connections with 16 calls in flight each, as redis_ledger
# below): N calls of the empty script, of the reserve part and of the settle part,
# one decision per call, then N / K calls of each part with K decisions per call
# (default K = 16). Then bench/redis_ledger drives the store's own scripts
# (server/redis/) for 5 s, also 8 x 16. Each row gives Redis's CPU (user + system,
# from /proc/<pid>/stat) per decision in µs; the floor is reserve + settle. Every
# process started here is stopped by pid on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requests=100000
batch=16
appendonly=no
build=1
keep_logs=0

die() { echo "redis_floor.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) [ $# -ge 2 ] || die "--requests needs a value"; requests=$2; shift ;;
        --batch) [ $# -ge 2 ] || die "--batch needs a value"; batch=$2; shift ;;
        --appendonly) appendonly=yes ;;
        --no-build) build=0 ;;
        --keep-logs) keep_logs=1 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ "$requests" =~ ^[0-9]+$ ]] && [ "$requests" -ge 1000 ] || die "--requests: expected >= 1000"
[[ "$batch" =~ ^[0-9]+$ ]] && [ "$batch" -ge 2 ] && [ "$batch" -le 1000 ] ||
    die "--batch: expected 2..1000"
for c in redis-server redis-cli redis-benchmark python3; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh)"
done

source "$root/bench/lib.sh"
bench_init discern-redis-floor
build_release redis_ledger

redis_up "$tmp" --appendonly "$appendonly" --appendfsync everysec
port=$redis_port
sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$root/bench/redis_floor.lua")")
[[ "$sha" =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD failed: $sha"

per() { python3 -c "print(f'{($2 - $1) * 1e6 / $3:.2f}')"; }

# row PART K: N / K calls of PART with K decisions each; prints Redis µs per decision.
row() {
    local part=$1 k=$2 calls=$((requests / $2)) r0 r1
    r0=$(cpu_seconds "$redis_pid")
    redis-benchmark -p "$port" -c 8 -P 16 -n "$calls" -r 100000000 -q \
        EVALSHA "$sha" 0 "$part" "__rand_int__" "$k" >"$tmp/bench-$part-$k.log" 2>&1 ||
        { cat "$tmp/bench-$part-$k.log"; die "redis-benchmark failed"; }
    r1=$(cpu_seconds "$redis_pid")
    per "$r0" "$r1" $((calls * k))
}

echo "command: bench/redis_floor.sh --requests $requests --batch $batch" \
    "$([ "$appendonly" = yes ] && echo --appendonly)"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "redis: $(redis-server --version | awk '{print $3}'), appendonly $appendonly"
empty=$(row empty 1)
res1=$(row reserve 1)
set1=$(row settle 1)
resk=$(row reserve "$batch")
setk=$(row settle "$batch")
redis-cli -p "$port" FLUSHALL >/dev/null
r0=$(cpu_seconds "$redis_pid")
"$bin/redis_ledger" --url "redis://127.0.0.1:$port" --connections 8 --pipeline 16 --seconds 5 \
    >"$tmp/ledger.log" 2>&1 || { cat "$tmp/ledger.log"; die "redis_ledger failed"; }
r1=$(cpu_seconds "$redis_pid")
n=$(sed -n 's/.*decisions=\([0-9]*\) .*/\1/p' "$tmp/ledger.log" | tail -1)
[ -n "$n" ] && [ "$n" -gt 0 ] || { cat "$tmp/ledger.log"; die "no decisions from redis_ledger"; }
store=$(per "$r0" "$r1" "$n")

printf '%-52s %10s\n' "Redis CPU per decision" "µs"
printf '%-52s %10s\n' "an empty script call" "$empty"
printf '%-52s %10s\n' "reserve part (11 commands), 1 decision per call" "$res1"
printf '%-52s %10s\n' "settle part (13 commands), 1 decision per call" "$set1"
printf '%-52s %10s\n' "floor: reserve + settle, 1 decision per call" \
    "$(python3 -c "print(f'{$res1 + $set1:.2f}')")"
printf '%-52s %10s\n' "floor: reserve + settle, $batch decisions per call" \
    "$(python3 -c "print(f'{$resk + $setk:.2f}')")"
printf '%-52s %10s\n' "the store's scripts (redis_ledger, $n decisions)" "$store"
