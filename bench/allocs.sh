#!/usr/bin/env bash
# allocs.sh - heap allocations per request of discernd, counted by valgrind.
#
#   bench/allocs.sh [--requests N] [--depth D] [--discernd PATH] [--no-build] [--keep-logs]
#
# Starts discernd (shipped policies, SQLite store, durability full, one worker) under
# valgrind's memcheck twice, sets one budget through the API, sends N and then 2N
# requests of loadgen's default workload (check with reserve, then the settle of each
# hold) on one connection with D in flight, stops it with SIGTERM and reads
# memcheck's "total heap usage". The difference between the two runs over the N
# extra requests is what one request allocates in the steady state (start-up and
# the catalogue cancel out): every malloc, calloc and realloc of the server, the
# ledger and its store, SQLite and the Lua VM of the policies.
#
# Why: the hot path should not call malloc per request; this counts it exactly
# (valgrind slows discernd down, which changes timing, not what it allocates per
# request). --discernd measures another build (e.g. the one before a change).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requests=4000
depth=1
build=1
keep_logs=0
discernd_bin=

die() { echo "allocs.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) [ $# -ge 2 ] || die "--requests needs a value"; requests=$2; shift ;;
        --depth) [ $# -ge 2 ] || die "--depth needs a value"; depth=$2; shift ;;
        --discernd) [ $# -ge 2 ] || die "--discernd needs a path"; discernd_bin=$2; shift ;;
        --no-build) build=0 ;;
        --keep-logs) keep_logs=1 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ "$requests" =~ ^[0-9]+$ ]] && [ "$requests" -ge 100 ] || die "--requests: expected >= 100"
[[ "$depth" =~ ^[0-9]+$ ]] && [ "$depth" -ge 1 ] && [ "$depth" -le 64 ] || die "--depth: expected 1..64"
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"

source "$root/bench/lib.sh"
bench_init discern-allocs
build_release discernd loadgen
[ -z "$discernd_bin" ] || [ -x "$discernd_bin" ] || die "no discernd at $discernd_bin"

token=allocs-$$-$RANDOM
store_path=discern.db
durability=full
workers=1
start_tenths=600 # valgrind: the catalogue loads slowly

heap_allocs() { # heap_allocs N: total allocations of a discernd that served N requests
    local dir=$tmp/run-$1 log
    log=$dir/memcheck.log
    mkdir -p "$dir"
    pin_server=(valgrind --tool=memcheck --leak-check=no --log-file="$log")
    start_discernd "$dir"
    timeout 300 "$bin/loadgen" --port "$dsc_port" --setup-budgets one --admin-token "$token" \
        --timeout 200 >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log"; die "budget setup failed"; }
    timeout 600 "$bin/loadgen" --port "$dsc_port" -c 1 -P "$depth" -n "$1" --timeout 500 \
        --kv >"$dir/loadgen.log" 2>&1 || { cat "$dir/loadgen.log"; die "loadgen failed"; }
    grep -q 'errors=0 ' "$dir/loadgen.log" || { cat "$dir/loadgen.log"; die "requests failed"; }
    kill "$dsc_pid"
    wait "$dsc_pid" 2>/dev/null || true
    sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' "$log" | tr -d ,
}

echo "command: bench/allocs.sh --requests $requests --depth $depth${discernd_bin:+ --discernd $discernd_bin}"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
a1=$(heap_allocs "$requests")
a2=$(heap_allocs $((2 * requests)))
[ -n "$a1" ] && [ -n "$a2" ] || die "no heap summary from valgrind (see --keep-logs)"
python3 -c "
a1, a2, n = $a1, $a2, $requests
print(f'{n} requests: {a1} allocations; {2 * n}: {a2}; per request: {(a2 - a1) / n:.2f}')"
