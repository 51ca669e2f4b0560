#!/usr/bin/env bash
# redis_instructions.sh - instructions redis-server executes per decision of a discernd
# on the Redis store, counted by callgrind.
#
#   bench/redis_instructions.sh [--requests N] [--depth D] [--connections C] [--aof on|off]
#                               [--state-age MS] [--discernd PATH] [--no-build] [--keep-logs]
#
# Twice, in a temporary folder: starts redis-server under valgrind's callgrind on a
# free loopback port (no RDB saves; --aof on, the default: appendonly yes,
# appendfsync everysec; --aof off: no persistence), starts a discernd (Release
# build, shipped policies, one worker) pointed at it, sets one budget through the
# API and sends N and then 2N requests of loadgen's default workload (check with
# reserve, then the settle of each hold) on C connections (default 1) with D in
# flight each; stops discernd, shuts Redis down and reads the instructions callgrind
# collected over all of Redis's threads. The difference between the two runs over
# the extra decisions (a check and its settle) is what one decision costs Redis in
# the steady state: start-up, loading the scripts and the budget cancel out. "In
# commands" is the part spent reading and running the calls (processInputBuffer:
# the scripts, the commands they call, the AOF buffer), without the timers and the
# socket writes, which grow with the run's length in seconds, not in decisions.
# discernd runs with redis_state_max_age_ms = 10000 (--state-age), so a check reads
# no state of its own, as on a counter many checks a second touch (two script calls
# per decision, whatever the machine's speed of the moment); --state-age 0 makes
# every check read its counters first (three calls, as on a counter seldom touched).
#
# Why: Redis's CPU per decision moves with the machine's load; an instruction count
# does not. It leaves out the kernel's work (a write or fsync counts once, not what
# it does), so it measures what Redis itself runs: the scripts, the commands they
# call, the AOF buffer. --discernd counts the scripts another build embeds (e.g. the
# one before a change). Every process started here is stopped by pid on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requests=2000
depth=1
connections=1
aof=on
state_age=10000
build=1
keep_logs=0
discernd_bin=

die() { echo "redis_instructions.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) [ $# -ge 2 ] || die "--requests needs a value"; requests=$2; shift ;;
        --depth) [ $# -ge 2 ] || die "--depth needs a value"; depth=$2; shift ;;
        --connections) [ $# -ge 2 ] || die "--connections needs a value"; connections=$2; shift ;;
        --aof) [ $# -ge 2 ] || die "--aof needs a value"; aof=$2; shift ;;
        --state-age) [ $# -ge 2 ] || die "--state-age needs a value"; state_age=$2; shift ;;
        --discernd) [ $# -ge 2 ] || die "--discernd needs a path"; discernd_bin=$2; shift ;;
        --no-build) build=0 ;;
        --keep-logs) keep_logs=1 ;;
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ "$requests" =~ ^[0-9]+$ ]] && [ "$requests" -ge 100 ] || die "--requests: expected >= 100"
[[ "$depth" =~ ^[0-9]+$ ]] && [ "$depth" -ge 1 ] && [ "$depth" -le 64 ] || die "--depth: expected 1..64"
[[ "$connections" =~ ^[0-9]+$ ]] && [ "$connections" -ge 1 ] && [ "$connections" -le 100 ] ||
    die "--connections: expected 1..100"
case "$aof" in on|off) ;; *) die "--aof: expected on or off" ;; esac
[[ "$state_age" =~ ^[0-9]+$ ]] && [ "$state_age" -le 10000 ] || die "--state-age: expected 0..10000"
command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
command -v redis-server >/dev/null || die "redis-server not found (scripts/deps.sh)"

source "$root/bench/lib.sh"
bench_init discern-redis-instr
build_release discernd loadgen
[ -z "$discernd_bin" ] || [ -x "$discernd_bin" ] || die "no discernd at $discernd_bin"

token=instr-$$-$RANDOM
workers=1
durability=batch # not read on a Redis store; lib.sh writes it into the config
store_path=
persist=(--appendonly no)
[ "$aof" = off ] || persist=(--appendonly yes --appendfsync everysec)

# start_redis DIR: redis-server under callgrind, its files in DIR; sets $redis_pid,
# $redis_port.
start_redis() {
    local dir=$1
    redis_prefix=(valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out"
        --log-file="$dir/callgrind.log")
    redis_tenths=600
    redis_up "$dir" "${persist[@]}"
}

# checks LOG: the checks loadgen saw answered.
checks() { sed -n 's/^  check *\([0-9]*\) .*/\1/p' "$1"; }

# run_once N: the instructions ($ins) and checks ($chk) of a Redis that served N requests.
run_once() {
    local dir=$tmp/run-$1
    mkdir -p "$dir"
    start_redis "$dir"
    start_discernd "$dir/discernd" "store = \"redis://127.0.0.1:$redis_port\"" \
        "redis_state_max_age_ms = $state_age"
    # discernd answers store_unavailable until its connections to the slowed Redis are up
    for _ in $(seq 60); do
        timeout 300 "$bin/loadgen" --port "$dsc_port" --setup-budgets one --admin-token "$token" \
            --timeout 200 >"$dir/setup.log" 2>&1 && break
        sleep 1
    done
    grep -q ', 0 errors' "$dir/setup.log" || { cat "$dir/setup.log"; die "budget setup failed"; }
    timeout 900 "$bin/loadgen" --port "$dsc_port" -c "$connections" -P "$depth" -n "$1" \
        --timeout 800 --kv >"$dir/loadgen.log" 2>&1 || { cat "$dir/loadgen.log"; die "loadgen failed"; }
    grep -q 'errors=0 ' "$dir/loadgen.log" || { cat "$dir/loadgen.log"; die "requests failed"; }
    stop_pid "$dsc_pid"
    redis-cli -p "$redis_port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    for _ in $(seq 600); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$redis_pid"
    ins=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$dir/callgrind.log" | tail -1)
    cmd=$(callgrind_annotate --inclusive=yes --threshold=100 "$dir/callgrind.out" 2>/dev/null |
        sed -n 's/^ *\([0-9,]*\) .*:processInputBuffer .*/\1/p' | head -1 | tr -d ,)
    chk=$(checks "$dir/loadgen.log")
}

echo "command: bench/redis_instructions.sh --requests $requests --depth $depth --connections" \
    "$connections --aof $aof --state-age $state_age${discernd_bin:+ --discernd $discernd_bin}"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown);" \
    "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
run_once "$requests"
i1=$ins c1=$chk p1=$cmd
run_once $((2 * requests))
i2=$ins c2=$chk p2=$cmd
[ -n "$i1" ] && [ -n "$i2" ] || die "no instruction count from callgrind (see --keep-logs)"
[ -n "$c1" ] && [ -n "$c2" ] && [ "$c2" -gt "$c1" ] || die "no checks counted (see --keep-logs)"
python3 -c "
i1, i2, c1, c2, p1, p2 = $i1, $i2, $c1, $c2, ${p1:-0}, ${p2:-0}
print(f'{c1} decisions: {i1} instructions; {c2}: {i2}; per decision (check + settle):'
      f' {(i2 - i1) / (c2 - c1):.0f}; of which in commands: {(p2 - p1) / (c2 - c1):.0f}')"
