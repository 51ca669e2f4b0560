#!/usr/bin/env bash
# run.sh - discernd and Redis doing the same budget check, side by side, in one run.
#
#   bench/run.sh [--quick] [--duration S] [--connections N] [--method M] [--settle F]
#                [--workers N] [--durability D] [--no-build] [--keep-logs]
#
# Builds a Release tree (build-rel/), starts discernd (shipped policies, SQLite store
# in a temporary folder, durability "full", budgets created through the admin API)
# and two redis-servers (persistence off; appendonly yes + appendfsync everysec),
# loads bench/redis_check.lua with SCRIPT LOAD, then for each scenario - 1 budget or
# 10 000 budgets, pipeline depth 1 or 16, same connection count - drives discernd
# with bench/loadgen and each Redis with redis-benchmark EVALSHA, back to back so
# that the machine's speed is the same for both, and prints one table.
#
# Servers run on the CPUs in $SERVER_CPUS and the load generators on $CLIENT_CPUS
# (taskset; default: the last CPU for clients, the others for servers). Every run
# is bounded in time and every process started here is stopped by pid on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command_line="bench/run.sh $*"
duration=10
connections=50
method=check
settle=1
build=1
keep_logs=0
quick=0
workers=
durability=full

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --quick          2 s per run (a smoke test of the harness, not a measurement)
  --duration S     measured seconds per run (default 10)
  --connections N  connections of both load generators (default 50)
  --method M       loadgen method: check (default), estimate or ping
  --settle F       fraction of reservations loadgen settles (default 1)
  --workers N      discernd worker threads (default: one per server CPU)
  --durability D   discernd durability: full (default, the benchmark), batch or off
                   (to see what the rest of the request costs)
  --no-build       use the existing build-rel/
  --keep-logs      keep the temporary folder with the servers' logs
Environment: SERVER_CPUS, CLIENT_CPUS (taskset lists, e.g. "1" and "0").
EOF
}

die() { echo "run.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; duration=2 ;;
        --duration) [ $# -ge 2 ] || die "--duration needs a value"; duration=$2; shift ;;
        --connections) [ $# -ge 2 ] || die "--connections needs a value"; connections=$2; shift ;;
        --method) [ $# -ge 2 ] || die "--method needs a value"; method=$2; shift ;;
        --settle) [ $# -ge 2 ] || die "--settle needs a value"; settle=$2; shift ;;
        --workers) [ $# -ge 2 ] || die "--workers needs a value"; workers=$2; shift ;;
        --durability) [ $# -ge 2 ] || die "--durability needs a value"; durability=$2; shift ;;
        --no-build) build=0 ;;
        --keep-logs) keep_logs=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ "$duration" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--duration: expected seconds, got '$duration'"
[[ "$connections" =~ ^[0-9]+$ ]] && [ "$connections" -ge 1 ] && [ "$connections" -le 10000 ] ||
    die "--connections: expected 1..10000, got '$connections'"
for tool in redis-server redis-cli redis-benchmark python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh installs it)"
done

# --- processes and cleanup ---------------------------------------------------------
source "$root/bench/lib.sh"
bench_init discern-bench

# --- CPU pinning -------------------------------------------------------------------
ncpu=$(nproc)
if [ -z "${SERVER_CPUS:-}" ] && [ -z "${CLIENT_CPUS:-}" ] && [ "$ncpu" -ge 2 ]; then
    CLIENT_CPUS=$((ncpu - 1))
    SERVER_CPUS=$([ "$ncpu" -eq 2 ] && echo 0 || echo "0-$((ncpu - 2))")
fi
if [ -n "${SERVER_CPUS:-}" ] && command -v taskset >/dev/null; then
    pin_server=(taskset -c "$SERVER_CPUS")
    pin_client=(taskset -c "${CLIENT_CPUS:?set CLIENT_CPUS too}")
    server_ncpu=$(python3 -c "
s='$SERVER_CPUS'; n=0
for part in s.split(','):
    a, _, b = part.partition('-'); n += int(b or a) - int(a) + 1
print(n)")
    pinning="servers on CPU $SERVER_CPUS, load generators on CPU $CLIENT_CPUS (taskset)"
else
    pin_server=(); pin_client=(); server_ncpu=$ncpu
    pinning="not pinned (one CPU, or no taskset)"
fi
[ -n "$workers" ] || workers=$server_ncpu
case "$durability" in full|batch|off) ;; *) die "--durability: expected full, batch or off, got '$durability'" ;; esac
[[ "$workers" =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] || die "--workers: expected a count, got '$workers'"

# --- build -------------------------------------------------------------------------
build_release discernd loadgen

# --- discernd ----------------------------------------------------------------------
token=bench-$$-$RANDOM
store_path=discern.db

setup_budgets() { # setup_budgets one|users
    timeout 120 "${pin_client[@]}" "$bin/loadgen" --port "$dsc_port" --setup-budgets "$1" \
        --admin-token "$token" --timeout 100 >"$tmp/setup-$1.log" ||
        { cat "$tmp/setup-$1.log"; die "budget setup through the API failed"; }
}

run_discernd() { # run_discernd DEPTH -> RESULT line in $result
    local out=$tmp/loadgen-$scenario-P$1.log
    timeout $((${duration%.*} + 30)) "${pin_client[@]}" "$bin/loadgen" --port "$dsc_port" \
        -c "$connections" -P "$1" -d "$duration" --warmup 1 --method "$method" \
        --settle "$settle" --server-pid "$dsc_pid" --kv >"$out" 2>&1 || true
    result=$(grep '^RESULT ' "$out" || true)
    [ -n "$result" ] || { cat "$out"; die "loadgen produced no result"; }
    if ! grep -q 'errors=0 ' <<<"$result"; then
        echo "warning: discernd run with errors ($scenario, P$1):" >&2
        sed -n '/^errors/,$p' "$out" | head -12 >&2
    fi
}

kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# --- Redis -------------------------------------------------------------------------
declare -A redis_pid redis_port
sha=
start_redis() { # start_redis NAME [redis-server options]
    local name=$1 dir=$tmp/redis-$1 port
    shift
    mkdir -p "$dir"
    port=$(free_port)
    "${pin_server[@]}" redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --save '' --daemonize no --logfile "$dir/redis.log" "$@" &
    redis_pid[$name]=$!
    redis_port[$name]=$port
    pids+=("${redis_pid[$name]}")
    for _ in $(seq 100); do
        redis-cli -p "$port" PING >/dev/null 2>&1 && break
        sleep 0.05
    done
    redis-cli -p "$port" PING >/dev/null || die "redis-server ($name) did not start"
    sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$root/bench/redis_check.lua")")
    # per-token factors in micro-gCO2e, budgets with a limit nothing reaches
    redis-cli -p "$port" HSET factors:gpt-4o in 10 out 400 >/dev/null
    for ((i = 0; i < 10000; i++)); do
        printf 'HSET budget:%012d used 0 limit 1000000000000000000\r\n' "$i"
    done | redis-cli -p "$port" --pipe >/dev/null
    [ "$(redis-cli -p "$port" DBSIZE)" = 10001 ] || die "redis ($name): budget keys not loaded"
}

run_redis() { # run_redis NAME DEPTH KEYS -> rps p99_ms cpu_us in $rres
    local name=$1 depth=$2 keys=$3 port=${redis_port[$1]} pid=${redis_pid[$1]}
    local args=(-p "$port" -c "$connections" -P "$depth" --csv)
    local cmd=(EVALSHA "$sha" 1)
    if [ "$keys" = 1 ]; then cmd+=(budget:000000000000); else args+=(-r "$keys"); cmd+=(budget:__rand_int__); fi
    cmd+=(gpt-4o 1200 800)
    # calibrate (and warm up) for about a second, then size the run to $duration
    local cal rps n t0 t1 line
    cal=$(timeout 60 "${pin_client[@]}" redis-benchmark "${args[@]}" -n $((20000 * depth > 200000 ? 200000 : 20000 * depth)) "${cmd[@]}" | tail -1)
    rps=$(cut -d, -f2 <<<"$cal" | tr -d '"')
    n=$(python3 -c "print(max(10000, int(float('$rps') * float('$duration'))))")
    redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
    t0=$(cpu_ticks "$pid")
    line=$(timeout $((${duration%.*} * 4 + 60)) "${pin_client[@]}" redis-benchmark "${args[@]}" -n "$n" "${cmd[@]}" | tail -1) ||
        die "redis-benchmark ($name) failed or timed out"
    t1=$(cpu_ticks "$pid")
    local failed
    failed=$(redis-cli -p "$port" INFO commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_evalsha:.*failed_calls=\([0-9]*\).*/\1/p')
    [ "${failed:-0}" = 0 ] || echo "warning: redis ($name) had $failed failed EVALSHA calls" >&2
    rres=$(python3 -c "
import csv, sys
row = next(csv.reader(['''$line''']))
rps, p99 = float(row[1]), float(row[6])
ticks = $t1 - $t0
print('%.0f %.3f %.2f' % (rps, p99, ticks / $(getconf CLK_TCK) * 1e6 / $n))")
}

# --- the runs ----------------------------------------------------------------------
echo "command: $command_line"
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pinning: $pinning; discernd workers: $workers, durability $durability"
echo "runs: $connections connections, ${duration} s measured per run (+1 s warm-up), loadgen --method $method --settle $settle"
start_redis noaof --appendonly no
start_redis aof --appendonly yes --appendfsync everysec

rows=()
for scenario in one users; do
    start_discernd "$tmp/$scenario"
    [ "$method" != check ] || setup_budgets "$scenario"
    keys=$([ "$scenario" = one ] && echo 1 || echo 10000)
    label=$([ "$scenario" = one ] && echo "1 budget" || echo "10k budgets")
    for depth in 1 16; do
        echo "  P$depth, $label: discernd ..." >&2
        run_discernd "$depth"
        for r in noaof aof; do
            echo "  P$depth, $label: redis ($r) ..." >&2
            run_redis "$r" "$depth" "$keys"
            read -r rrps rp99 rcpu <<<"$rres"
            rows+=("$depth|$label|$r|$(kv check_rps "$result")|$(kv rps "$result")|$(kv p99_us "$result")|$(kv server_cpu_us "$result")|$(kv errors "$result")|$rrps|$rp99|$rcpu")
        done
    done
    stop_pid "$dsc_pid"
done

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$method" "${rows[@]}" <<'EOF'
import sys
# ratio: discernd checks/s (decisions) over Redis EVALSHA/s (decisions); with
# --method estimate or ping, discernd requests/s over Redis EVALSHA/s.
# CPU ratio: Redis server CPU per call over discernd server CPU per decision (all
# requests' CPU divided by the checks), the throughput ratio both would reach if each
# were CPU-bound on a core of its own; it holds better than the rates on a shared
# machine.
method = sys.argv[1]
first = "discernd checks/s" if method == "check" else f"discernd {method}/s"
print(f"| scenario | Redis | {first} | discernd req/s | Redis req/s | ratio | CPU ratio | "
      "discernd p99 ms | Redis p99 ms | discernd CPU us/req | Redis CPU us/req | discernd errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for row in sys.argv[2:]:
    d, label, r, crps, rps, p99, cpu, err, rrps, rp99, rcpu = row.split("|")
    main = float(crps) if method == "check" else float(rps)
    ratio = main / float(rrps) if float(rrps) else 0
    per_decision = float(cpu) * float(rps) / main if main else 0
    cpu_ratio = float(rcpu) / per_decision if per_decision > 0 else 0
    redis = "no persistence" if r == "noaof" else "AOF everysec"
    print(f"| P{d}, {label} | {redis} | {main:,.0f} | {float(rps):,.0f} | {float(rrps):,.0f} | "
          f"{ratio:.2f} | {cpu_ratio:.2f} | {float(p99)/1000:.3f} | {float(rp99):.3f} | "
          f"{float(cpu):.1f} | {float(rcpu):.1f} | {err} |")
EOF
