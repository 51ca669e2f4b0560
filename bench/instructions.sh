#!/usr/bin/env bash
# instructions.sh - instructions discernd executes per request, counted by callgrind.
#
#   bench/instructions.sh [--requests N] [--depth D] [--connections C] [--store none|redis]
#                         [--durability full|batch|off] [--discernd PATH] [--no-build]
#                         [--writer] [--keep-logs]
#
# Starts discernd (shipped policies, one worker, a SQLite store unless --store none,
# durability batch by default) under valgrind's callgrind twice, sets one budget
# through the API, sends N and then 2N requests of loadgen's default workload (check
# with reserve, then the settle of each hold) on C connections (default 1) with D in
# flight each, stops it with SIGTERM and reads the instructions callgrind collected
# over all its threads. The difference between the two runs over the N extra
# requests is what one request costs in the steady state (start-up, the catalogue
# and the policies' compilation cancel out).
#
# Why: this machine's speed moves by 2x within minutes, so CPU time per request
# cannot show a change of 5 %; an instruction count does not depend on the load.
# It leaves out what the kernel does (system calls are counted once, not their
# work), so it measures the user-space side of a change. --discernd counts another
# build (e.g. the one before a change) with this checkout's policies: a build older
# than the policies' API refuses them at start; run its own checkout's script then.
# --store redis starts a redis-server (no
# persistence) on a free loopback port in the temporary folder, points discernd at
# it (store = "redis://127.0.0.1:PORT") and empties it before each run; it is
# stopped by pid on exit. --writer also counts the SQLite store's writer thread
# ("dsc-store": the thread that runs writer_main) on its own (callgrind
# --separate-threads=yes) and reports its instructions per request beside the whole
# process's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requests=4000
depth=1
connections=1
durability=batch
store_path=discern.db
redis=0
build=1
keep_logs=0
writer=0
discernd_bin=

die() { echo "instructions.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) [ $# -ge 2 ] || die "--requests needs a value"; requests=$2; shift ;;
        --depth) [ $# -ge 2 ] || die "--depth needs a value"; depth=$2; shift ;;
        --connections) [ $# -ge 2 ] || die "--connections needs a value"; connections=$2; shift ;;
        --durability) [ $# -ge 2 ] || die "--durability needs a value"; durability=$2; shift ;;
        --store) [ $# -ge 2 ] || die "--store needs a value"; shift
                 case "$1" in none) store_path= ;; redis) store_path= redis=1 ;;
                     *) die "--store: expected none or redis, got '$1'" ;; esac ;;
        --discernd) [ $# -ge 2 ] || die "--discernd needs a path"; discernd_bin=$2; shift ;;
        --no-build) build=0 ;;
        --keep-logs) keep_logs=1 ;;
        --writer) writer=1 ;;
        -h|--help) sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ "$requests" =~ ^[0-9]+$ ]] && [ "$requests" -ge 100 ] || die "--requests: expected >= 100"
[[ "$depth" =~ ^[0-9]+$ ]] && [ "$depth" -ge 1 ] && [ "$depth" -le 64 ] || die "--depth: expected 1..64"
[[ "$connections" =~ ^[0-9]+$ ]] && [ "$connections" -ge 1 ] && [ "$connections" -le 100 ] ||
    die "--connections: expected 1..100"
case "$durability" in full|batch|off) ;; *) die "--durability: expected full, batch or off" ;; esac
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
[ "$redis" = 0 ] || command -v redis-server >/dev/null ||
    die "redis-server not found (scripts/deps.sh)"
[ "$writer" = 0 ] || [ -n "$store_path" ] || die "--writer needs the SQLite store"

source "$root/bench/lib.sh"
bench_init discern-instr
build_release discernd loadgen
[ -z "$discernd_bin" ] || [ -x "$discernd_bin" ] || die "no discernd at $discernd_bin"

token=instr-$$-$RANDOM
workers=1
start_tenths=600 # valgrind: the catalogue loads slowly
store_line=()
if [ "$redis" = 1 ]; then
    redis_up "$tmp" --appendonly no
    store_line=("store = \"redis://127.0.0.1:$redis_port\"")
fi

# writer_instructions DIR: what the thread that ran writer_main executed (the totals of
# its own file of a --separate-threads run).
writer_instructions() {
    local f
    f=$(grep -l '^c\{0,1\}fn=.* writer_main$' "$1"/callgrind.out-* 2>/dev/null | head -1)
    [ -n "$f" ] || return 0
    sed -n 's/^\(summary\|totals\): \([0-9]*\).*/\2/p' "$f" | head -1
}

instructions() { # instructions N: what a discernd that served N requests executed
    local dir=$tmp/run-$1 log
    log=$dir/callgrind.log
    mkdir -p "$dir"
    pin_server=(valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out"
        --log-file="$log")
    [ "$writer" = 0 ] || pin_server+=(--separate-threads=yes)
    [ "$redis" = 0 ] || redis-cli -p "$redis_port" FLUSHALL >/dev/null
    start_discernd "$dir" "${store_line[@]+"${store_line[@]}"}"
    timeout 300 "$bin/loadgen" --port "$dsc_port" --setup-budgets one --admin-token "$token" \
        --timeout 200 >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; die "budget setup failed"; }
    timeout 900 "$bin/loadgen" --port "$dsc_port" -c "$connections" -P "$depth" -n "$1" \
        --timeout 800 --kv >"$dir/loadgen.log" 2>&1 || { cat "$dir/loadgen.log" >&2; die "loadgen failed"; }
    grep -q 'errors=0 ' "$dir/loadgen.log" || { cat "$dir/loadgen.log" >&2; die "requests failed"; }
    kill "$dsc_pid"
    wait "$dsc_pid" 2>/dev/null || true
    echo "$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log" | tail -1)" \
        "$([ "$writer" = 0 ] || writer_instructions "$dir")"
}

no_store=
[ -n "$store_path" ] || no_store=" --store none"
[ "$redis" = 0 ] || no_store=" --store redis"
writer_opt=
[ "$writer" = 0 ] || writer_opt=" --writer"
echo "command: bench/instructions.sh --requests $requests --depth $depth --connections" \
    "$connections --durability $durability$no_store${writer_opt}${discernd_bin:+ --discernd $discernd_bin}"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
# (assigned first: a failure inside the substitution then stops the script)
out1=$(instructions "$requests")
out2=$(instructions $((2 * requests)))
read -r i1 w1 <<<"$out1"
read -r i2 w2 <<<"$out2"
[ -n "$i1" ] && [ -n "$i2" ] || die "no instruction count from callgrind (see --keep-logs)"
python3 -c "
i1, i2, n = $i1, $i2, $requests
print(f'{n} requests: {i1} instructions; {2 * n}: {i2}; per request: {(i2 - i1) / n:.0f}')"
[ "$writer" = 0 ] || {
    [ -n "${w1:-}" ] && [ -n "${w2:-}" ] || die "no count for the writer thread (see --keep-logs)"
    python3 -c "
w1, w2, n = $w1, $w2, $requests
print(f'writer thread (dsc-store): {w1}; {w2}; per request: {(w2 - w1) / n:.0f}')"
}
