#!/usr/bin/env bash
# run.sh - discernd and its honest peers doing the same decisions, side by side, in one run.
#
#   bench/run.sh [--quick] [--duration S] [--connections N] [--method M] [--settle F]
#                [--workers N] [--durability LIST] [--store redis] [--no-build] [--keep-logs]
#
# Builds a Release tree (build-rel/) and, for each scenario - 1 budget or 10 000
# budgets, pipeline depth 1 or 16, the same connection count everywhere - runs back to
# back, so that the machine's speed is the same for all of them:
#   discernd, durability full   bench/loadgen: check (reserve) + settle of each hold,
#                               shipped policies, SQLite store, budgets set by the API
#   discernd, durability batch  the same with group commits not waited for
#   Redis single script         redis-benchmark EVALSHA bench/redis_check.lua (one
#                               call per decision), appendonly + appendfsync always:
#                               acknowledged = fsynced, the promise of `full`
#   Redis reserve+settle        bench/redis_pair: EVALSHA bench/redis_reserve.lua then
#                               EVALSHA bench/redis_settle.lua per decision, what
#                               discernd does, same appendfsync always
#   Redis no persistence        the single script on a Redis without AOF: the ceiling
# With --store redis, also (same scenarios, same run):
#   discernd on Redis           one discernd with store = redis:// on a Redis with
#                               appendfsync everysec: its CPU and Redis's CPU per
#                               decision are reported apart (Redis CPU us/dec)
#   2 discernd on Redis         two discernd on that Redis, one load generator each
#                               (half the connections), decisions/s summed; then a
#                               budget small enough to refuse, and every counter in
#                               Redis checked: used + held above the limit is an
#                               overshoot (column overshoot: must be "never")
# and prints one table: decisions/s, requests/s, each discernd row's ratio to the two
# Redis `always` rows, server CPU us per decision (/proc/PID/stat), p50 and p99, and
# bytes per decision: for discernd what it wrote to storage (/proc/PID/io write_bytes:
# the WAL plus the pages checkpointed into the database) and the database file's
# growth; for Redis `always` the growth of its AOF. Decisions for these byte counts
# come from discernd's own `stats` (warm-up included, like the bytes). For discernd
# on SQLite also the store writer thread's own CPU per decision (store CPU us/dec:
# /proc/PID/task/TID/stat of the thread named dsc-store, warm-up included), the store
# share of the CPU column.
#
# Servers run on the CPUs in $SERVER_CPUS and the load generators on $CLIENT_CPUS
# (taskset; default: the last CPU for clients, the others for servers). Every run
# is bounded in time and every process started here is stopped by pid on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command_line="bench/run.sh $*"
duration=8
connections=50
method=check
settle=1
build=1
keep_logs=0
quick=0
workers=
durabilities=full,batch
stores=sqlite

usage() {
    sed -n '2,41p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --quick          2 s per run (a smoke test of the harness, not a measurement)
  --duration S     measured seconds per run (default 8; 20 runs: about 4 minutes)
  --connections N  connections of both load generators (default 50)
  --method M       loadgen method: check (default), estimate or ping
  --settle F       fraction of reservations loadgen settles (default 1)
  --workers N      discernd worker threads (default: one per server CPU)
  --durability L   discernd durabilities to run, a comma list of full, batch, off
                   (default full,batch; off shows what the rest of the request costs)
  --store redis    add the rows of discernd on a Redis store (one and two replicas)
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
        --durability) [ $# -ge 2 ] || die "--durability needs a value"; durabilities=$2; shift ;;
        --store) [ $# -ge 2 ] || die "--store needs a value"; shift
                 case "$1" in redis) stores=sqlite,redis ;; sqlite) stores=sqlite ;;
                     *) die "--store: expected redis (the SQLite rows always run), got '$1'" ;; esac ;;
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
IFS=, read -r -a dur_list <<<"$durabilities"
[ "${#dur_list[@]}" -ge 1 ] || die "--durability: expected a list of full, batch, off"
for d in "${dur_list[@]}"; do
    case "$d" in full|batch|off) ;; *) die "--durability: expected full, batch or off, got '$d'" ;; esac
done
[[ "$workers" =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] || die "--workers: expected a count, got '$workers'"

# --- build -------------------------------------------------------------------------
build_release discernd loadgen redis_pair
if [ "$build" = 1 ]; then # the CLI (target discern-cli) reads discernd's counters
    cmake --build "$root/build-rel" -j2 --target discern-cli >>"$tmp/cmake.log" 2>&1 ||
        { tail -30 "$tmp/cmake.log"; die "build failed"; }
fi
[ -x "$bin/discern" ] || die "no discern in $bin (drop --no-build)"

# --- discernd ----------------------------------------------------------------------
token=bench-$$-$RANDOM
store_path=discern.db
declare -A dsc_pids dsc_ports dsc_dirs

setup_budgets() { # setup_budgets PORT one|users
    timeout 120 "${pin_client[@]}" "$bin/loadgen" --port "$1" --setup-budgets "$2" \
        --admin-token "$token" --timeout 100 >"$tmp/setup-$2-$1.log" ||
        { cat "$tmp/setup-$2-$1.log"; die "budget setup through the API failed"; }
}

# decisions_so_far PORT: allow + throttle + refuse from discernd's own counters.
decisions_so_far() {
    timeout 10 "$bin/discern" stats --json --server "127.0.0.1:$1" 2>/dev/null |
        python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)["decisions"]
    print(d["allow"] + d["throttle"] + d["refuse"])
except Exception:
    print("")'
}

write_bytes() { sed -n 's/^write_bytes: //p' "/proc/$1/io" 2>/dev/null || true; }
file_bytes() { stat -c %s "$1" 2>/dev/null || echo 0; }

# store_ticks PID: utime + stime of PID's store writer thread (dsc-store), in clock
# ticks; empty when it has none (no store, or a Redis store).
store_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = dsc-store ] || continue
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$t/stat"
        return
    done
}

run_discernd() { # run_discernd DUR DEPTH -> $result (loadgen's RESULT line + bytes)
    local pid=${dsc_pids[$1]} port=${dsc_ports[$1]} db=${dsc_dirs[$1]}/$store_path
    local out=$tmp/loadgen-$scenario-$1-P$2.log n0 n1 w0 w1 s0 s1 t0 t1
    n0=$(decisions_so_far "$port"); w0=$(write_bytes "$pid"); s0=$(file_bytes "$db")
    t0=$(store_ticks "$pid")
    timeout $((${duration%.*} + 30)) "${pin_client[@]}" "$bin/loadgen" --port "$port" \
        -c "$connections" -P "$2" -d "$duration" --warmup 1 --method "$method" \
        --settle "$settle" --server-pid "$pid" --kv >"$out" 2>&1 || true
    n1=$(decisions_so_far "$port"); w1=$(write_bytes "$pid"); s1=$(file_bytes "$db")
    t1=$(store_ticks "$pid")
    result=$(grep '^RESULT ' "$out" || true)
    [ -n "$result" ] || { cat "$out"; die "loadgen produced no result"; }
    if ! grep -q 'errors=0 ' <<<"$result"; then
        echo "warning: discernd run with errors ($scenario, $1, P$2):" >&2
        sed -n '/^errors/,$p' "$out" | head -12 >&2
    fi
    local wpd=- dpd=- spd=-
    if [ -n "$n0" ] && [ -n "$n1" ] && [ "$n1" -gt "$n0" ] && [ -n "$w0" ] && [ -n "$w1" ]; then
        wpd=$(( (w1 - w0) / (n1 - n0) ))
        dpd=$(( (s1 - s0) / (n1 - n0) ))
        [ -n "$t0" ] && [ -n "$t1" ] &&
            spd=$(echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / ($n1 - $n0)" | bc -l)
    fi
    result="$result written_bpd=$wpd db_bpd=$dpd store_cpu_us=$spd"
}

kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# --- Redis -------------------------------------------------------------------------
declare -A redis_pids redis_ports
sha=
reserve_sha=
settle_sha=
start_redis() { # start_redis NAME [redis-server options]
    local name=$1 port
    shift
    redis_prefix=("${pin_server[@]}")
    redis_up "$tmp/redis-$name" "$@"
    port=$redis_port
    redis_pids[$name]=$redis_pid
    redis_ports[$name]=$port
    sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$root/bench/redis_check.lua")")
    reserve_sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$root/bench/redis_reserve.lua")")
    settle_sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$root/bench/redis_settle.lua")")
    # per-token factors in micro-gCO2e, budgets with a limit nothing reaches
    redis-cli -p "$port" HSET factors:gpt-4o in 10 out 400 >/dev/null
    for ((i = 0; i < 10000; i++)); do
        printf 'HSET budget:%012d used 0 held 0 limit 1000000000000000000\r\n' "$i"
    done | redis-cli -p "$port" --pipe >/dev/null
    [ "$(redis-cli -p "$port" DBSIZE)" = 10001 ] || die "redis ($name): budget keys not loaded"
}

aof_bytes() { du -sb "$tmp/redis-$1" 2>/dev/null | cut -f1; }

evalsha_stat() { # evalsha_stat NAME FIELD: calls or failed_calls since the last RESETSTAT
    redis-cli -p "${redis_ports[$1]}" INFO commandstats | tr -d '\r' |
        sed -n "s/^cmdstat_evalsha:\(.*,\)\{0,1\}$2=\([0-9]*\).*/\2/p"
}

run_redis() { # run_redis NAME DEPTH KEYS -> loadgen-style RESULT line in $result
    local name=$1 depth=$2 keys=$3 port=${redis_ports[$1]} pid=${redis_pids[$1]}
    local args=(-p "$port" -c "$connections" -P "$depth" --csv)
    local cmd=(EVALSHA "$sha" 1)
    if [ "$keys" = 1 ]; then cmd+=(budget:000000000000); else args+=(-r "$keys"); cmd+=(budget:__rand_int__); fi
    cmd+=(gpt-4o 1200 800)
    # calibrate (and warm up) for about a second, then size the run to $duration
    local cal rps n t0 t1 line a0 a1 failed
    cal=$(timeout 60 "${pin_client[@]}" redis-benchmark "${args[@]}" -n $((20000 * depth > 100000 ? 100000 : 20000 * depth)) "${cmd[@]}" | tail -1)
    rps=$(cut -d, -f2 <<<"$cal" | tr -d '"')
    n=$(python3 -c "print(max(10000, int(float('$rps') * float('$duration'))))")
    redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
    t0=$(cpu_ticks "$pid"); a0=$(aof_bytes "$name")
    line=$(timeout $((${duration%.*} * 4 + 60)) "${pin_client[@]}" redis-benchmark "${args[@]}" -n "$n" "${cmd[@]}" | tail -1) ||
        die "redis-benchmark ($name) failed or timed out"
    t1=$(cpu_ticks "$pid"); a1=$(aof_bytes "$name")
    failed=$(evalsha_stat "$name" failed_calls)
    [ "${failed:-0}" = 0 ] || echo "warning: redis ($name) had $failed failed EVALSHA calls" >&2
    result=$(LINE=$line python3 -c "
import csv, os
row = next(csv.reader([os.environ['LINE']]))
rps, p50, p99 = float(row[1]), float(row[4]), float(row[6])
cpu = ($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / $n
print('RESULT rps=%.0f check_rps=%.0f p50_us=%.1f p99_us=%.1f errors=${failed:-0} server_cpu_us=%.2f written_bpd=%d db_bpd=-'
      % (rps, rps, p50 * 1000, p99 * 1000, cpu, ($a1 - $a0) / $n))")
}

run_redis_pair() { # run_redis_pair NAME DEPTH KEYS -> RESULT line in $result
    local name=$1 port=${redis_ports[$1]} pid=${redis_pids[$1]} out=$tmp/pair-$scenario-P$2.log
    local a0 a1 calls
    redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
    a0=$(aof_bytes "$name")
    timeout $((${duration%.*} + 30)) "${pin_client[@]}" "$bin/redis_pair" --port "$port" \
        --reserve "$reserve_sha" --settle "$settle_sha" -c "$connections" -P "$2" \
        -d "$duration" --warmup 1 --keys "$3" --server-pid "$pid" --kv >"$out" 2>&1 || true
    a1=$(aof_bytes "$name")
    result=$(grep '^RESULT ' "$out" || true)
    [ -n "$result" ] || { cat "$out"; die "redis_pair produced no result"; }
    grep -q 'errors=0 ' <<<"$result" ||
        { echo "warning: redis pair run with errors ($scenario, P$2):" >&2; grep '^errors' "$out" >&2; }
    calls=$(evalsha_stat "$name" calls)
    # AOF growth over every call of the run (warm-up included), per decision (2 calls)
    result="$result written_bpd=$(( ${calls:-0} > 0 ? (a1 - a0) * 2 / calls : 0 )) db_bpd=-"
}

# --- the runs ----------------------------------------------------------------------
echo "command: $command_line"
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pinning: $pinning; discernd workers: $workers, durability ${dur_list[*]}"
echo "runs: $connections connections, ${duration} s measured per run (+1 s warm-up), loadgen --method $method --settle $settle"
# no automatic AOF rewrite: a rewrite forks in the middle of one run and not another
start_redis always --appendonly yes --appendfsync always --auto-aof-rewrite-percentage 0
start_redis noaof --appendonly no

rows=()
add_row() { # add_row SCENARIO SERVER: from $result
    rows+=("$1|$2|$(kv check_rps "$result")|$(kv rps "$result")|$(kv server_cpu_us "$result")|$(kv p50_us "$result")|$(kv p99_us "$result")|$(kv written_bpd "$result")|$(kv db_bpd "$result")|$(kv errors "$result")|$(kv redis_cpu_us "$result")|$(kv overshoot "$result")|$(kv store_cpu_us "$result")")
}

# --- discernd on a Redis store -----------------------------------------------------
if [[ "$stores" == *redis* ]]; then
    start_redis everysec --appendonly yes --appendfsync everysec --auto-aof-rewrite-percentage 0
fi
redis_url() { echo "redis://127.0.0.1:${redis_ports[everysec]}"; }

start_redis_replicas() { # start_redis_replicas SCENARIO N: N discernd on the everysec Redis
    local i
    redis-cli -p "${redis_ports[everysec]}" FLUSHALL >/dev/null
    for ((i = 0; i < $2; i++)); do
        store_path= start_discernd "$tmp/$1-redis$i" "store = \"$(redis_url)\""
        dsc_pids[redis$i]=$dsc_pid dsc_ports[redis$i]=$dsc_port dsc_dirs[redis$i]=$tmp/$1-redis$i
    done
    [ "$method" != check ] || setup_budgets "${dsc_ports[redis0]}" "$1"
    sleep 0.5 # the other replicas read the definitions (subscription)
}

# run_redis_store DEPTH N -> $result: N replicas, one loadgen each, rates summed;
# discernd's CPU and Redis's CPU per decision apart.
run_redis_store() {
    local depth=$1 n=$2 i r0 r1 c=$((connections / $2)) total=0 cpu=0 p50=0 p99=0 errs=0
    local rpid=${redis_pids[everysec]}
    r0=$(cpu_ticks "$rpid")
    for ((i = 0; i < n; i++)); do
        timeout $((${duration%.*} + 30)) "${pin_client[@]}" "$bin/loadgen" --port "${dsc_ports[redis$i]}" \
            -c "$c" -P "$depth" -d "$duration" --warmup 1 --method "$method" --settle "$settle" \
            --server-pid "${dsc_pids[redis$i]}" --kv >"$tmp/loadgen-redis-$scenario-$n-$i-P$depth.log" 2>&1 &
        lg[$i]=$!
    done
    for ((i = 0; i < n; i++)); do wait "${lg[$i]}" || true; done
    r1=$(cpu_ticks "$rpid")
    local sum
    sum=$(for ((i = 0; i < n; i++)); do grep '^RESULT ' "$tmp/loadgen-redis-$scenario-$n-$i-P$depth.log" || true; done |
        python3 -c "
import sys
rows = [dict(kv.split('=', 1) for kv in l.split()[1:]) for l in sys.stdin if l.strip()]
if len(rows) != $n: sys.exit(1)
f = lambda k: [float(r[k]) for r in rows]
chk, rps = sum(f('check_rps')), sum(f('rps'))
cpu = sum(float(r['server_cpu_us']) * float(r['rps']) for r in rows) / rps
# Redis CPU over the whole run (warm-up included) per measured decision: an upper bound
dur = float('$duration') + 1
redis_cpu = ($r1 - $r0) / $(getconf CLK_TCK) * 1e6 / (chk * dur) if chk else -1
print('RESULT rps=%.0f check_rps=%.0f p50_us=%s p99_us=%s errors=%d server_cpu_us=%.2f '
      'written_bpd=- db_bpd=- redis_cpu_us=%.2f' % (rps, chk, max(f('p50_us')), max(f('p99_us')),
      sum(int(r['errors']) for r in rows), cpu, redis_cpu))
") || { cat "$tmp"/loadgen-redis-"$scenario"-"$n"-*-P"$depth".log; die "loadgen on Redis produced no result"; }
    result=$sum
}

# overshoot_check: two replicas, one small budget, loadgen on both, then every counter
# in Redis: used + held must stay within the limit. Appends overshoot= to $result.
overshoot_check() {
    local i port=${redis_ports[everysec]} limit=2000 bad
    redis-cli -p "$port" FLUSHALL >/dev/null
    timeout 60 "${pin_client[@]}" "$bin/loadgen" --port "${dsc_ports[redis0]}" --setup-budgets one \
        --admin-token "$token" --budget-metric requests --budget-window month \
        --budget-limit "$limit" >"$tmp/setup-overshoot.log" 2>&1 || { cat "$tmp/setup-overshoot.log"; die "budget setup failed"; }
    sleep 0.5
    for ((i = 0; i < 2; i++)); do
        timeout 60 "${pin_client[@]}" "$bin/loadgen" --port "${dsc_ports[redis$i]}" -c 8 -P 16 -d 2 \
            --settle 0 --kv >"$tmp/overshoot-$i.log" 2>&1 &
        lg[$i]=$!
    done
    for ((i = 0; i < 2; i++)); do wait "${lg[$i]}" || true; done
    bad=$(redis-cli -p "$port" --scan --pattern '{discern:}c:*' | while read -r key; do
        redis-cli -p "$port" HMGET "$key" u h | tr '\n' ' '; echo; done |
        awk -v l=$((limit * 1000000)) '{ if ($1 + $2 > l) n++ } END { print n + 0 }')
    result="$result overshoot=$([ "$bad" = 0 ] && echo never || echo "$bad counters")"
}
for scenario in one users; do
    for d in "${dur_list[@]}"; do
        durability=$d
        start_discernd "$tmp/$scenario-$d"
        dsc_pids[$d]=$dsc_pid dsc_ports[$d]=$dsc_port dsc_dirs[$d]=$tmp/$scenario-$d
        [ "$method" != check ] || setup_budgets "$dsc_port" "$scenario"
    done
    keys=$([ "$scenario" = one ] && echo 1 || echo 10000)
    label=$([ "$scenario" = one ] && echo "1 budget" || echo "10k budgets")
    for depth in 1 16; do
        for d in "${dur_list[@]}"; do
            echo "  P$depth, $label: discernd ($d) ..." >&2
            run_discernd "$d" "$depth"
            add_row "P$depth, $label" "discernd $d"
        done
        echo "  P$depth, $label: Redis single script (always) ..." >&2
        run_redis always "$depth" "$keys"
        add_row "P$depth, $label" "Redis script, always"
        if [ "$method" = check ]; then
            echo "  P$depth, $label: Redis reserve+settle (always) ..." >&2
            run_redis_pair always "$depth" "$keys"
            add_row "P$depth, $label" "Redis reserve+settle, always"
        fi
        echo "  P$depth, $label: Redis single script (no persistence) ..." >&2
        run_redis noaof "$depth" "$keys"
        add_row "P$depth, $label" "Redis script, no persistence"
    done
    for d in "${dur_list[@]}"; do stop_pid "${dsc_pids[$d]}"; done
    [[ "$stores" == *redis* ]] || continue
    start_redis_replicas "$scenario" 2
    for depth in 1 16; do
        echo "  P$depth, $label: discernd on Redis (everysec) ..." >&2
        run_redis_store "$depth" 1
        add_row "P$depth, $label" "discernd on Redis, everysec"
        echo "  P$depth, $label: 2 discernd on Redis (everysec) ..." >&2
        run_redis_store "$depth" 2
        [ "$depth" = 16 ] && overshoot_check
        add_row "P$depth, $label" "2 discernd on Redis, everysec"
    done
    stop_pid "${dsc_pids[redis0]}"
    stop_pid "${dsc_pids[redis1]}"
done

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$method" "${rows[@]}" <<'EOF'
import sys
# decisions/s: discernd checks/s, Redis single-script calls/s, Redis pair reserves/s
# (with --method estimate or ping, discernd requests/s). x always / x pair: this row's
# decisions/s over the Redis `always` single script's and pair's in the same scenario.
# CPU us/decision: the server's CPU over every request of the run divided by the
# decisions (a discernd decision is a check plus its settle). CPU x always: the Redis
# `always` single script's CPU per decision over this row's - the throughput ratio
# both would reach each CPU-bound on a core of its own; it holds better than the rates
# on a shared machine. written B/dec: discernd's storage writes (/proc/PID/io
# write_bytes: WAL + checkpoints), Redis's AOF growth; db B/dec: database file growth.
# store CPU us/dec: discernd's SQLite writer thread alone, per decision.
method = sys.argv[1]
rows = [r.split("|") for r in sys.argv[2:]]


def num(v):
    try:
        return float(v)
    except ValueError:
        return None


def per_decision(r):
    dec, rps, cpu = num(r[2]), num(r[3]), num(r[4])
    if method != "check" and r[1].startswith("discernd"):
        dec = rps
    cpu_dec = cpu * rps / dec if dec and rps and cpu is not None and cpu >= 0 else None
    return dec, cpu_dec


peers = {}
for r in rows:
    if r[1].startswith("Redis") and "always" in r[1]:
        peers[(r[0], "pair" if "settle" in r[1] else "single")] = per_decision(r)
redis_rows = any(r[10] for r in rows)
extra_head = " Redis CPU us/dec | overshoot |" if redis_rows else ""
print("| scenario | server | decisions/s | requests/s | x always | x pair | CPU us/decision | "
      "store CPU us/dec | CPU x always | p50 ms | p99 ms | written B/dec | db B/dec | errors |" +
      extra_head)
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" +
      ("---:|---|" if redis_rows else ""))
for r in rows:
    dec, cpu = per_decision(r)
    single, pair = peers.get((r[0], "single")), peers.get((r[0], "pair"))
    def ratio(p):
        return f"{dec / p[0]:.2f}" if p and p[0] and dec else "-"
    def ms(v):
        return f"{float(v) / 1000:.3f}" if num(v) is not None else "-"
    cpu_ratio = f"{single[1] / cpu:.2f}" if single and single[1] and cpu else "-"
    tail = f" {r[10] or '-'} | {r[11] or '-'} |" if redis_rows else ""
    store = f"{num(r[12]):.1f}" if len(r) > 12 and num(r[12]) is not None else "-"
    print((f"| {r[0]} | {r[1]} | {dec or 0:,.0f} | {num(r[3]) or 0:,.0f} | {ratio(single)} | "
           f"{ratio(pair)} | {cpu:.1f} | {store} | {cpu_ratio} | {ms(r[5])} | {ms(r[6])} | "
           f"{r[7]} | {r[8]} | {r[9]} |" if cpu is not None else
           f"| {r[0]} | {r[1]} | {dec or 0:,.0f} | {num(r[3]) or 0:,.0f} | {ratio(single)} | "
           f"{ratio(pair)} | - | {store} | - | {ms(r[5])} | {ms(r[6])} | {r[7]} | {r[8]} | "
           f"{r[9]} |") + tail)
EOF
