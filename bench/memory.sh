#!/usr/bin/env bash
# memory.sh - discernd's memory with 100 000 budgets and 10 000 connections.
#
#   bench/memory.sh [--budgets N] [--connections N] [--hold S] [--load-connections N]
#                   [--load-seconds S] [--store sqlite|memory] [--workers N]
#                   [--durability D] [--no-build] [--keep-logs]
#
# Checks the design target "100 000 budgets and 10 000 connections in under 200 MB
# RSS" end to end on a real server: builds a Release tree (build-rel/), starts
# discernd on a free 127.0.0.1 port with the shipped policies and a SQLite store in
# a temporary folder, then
#   1. reads VmRSS and VmHWM (/proc/PID/status) at start;
#   2. creates N budgets user:u0 ... user:u<N-1> through the admin API (budget.set,
#      loadgen --setup-budgets), then runs one check with reserve and one settle for
#      every one of those users (loadgen --sequential), so each budget has its
#      counter and the server has seen a reservation per user;
#   3. opens the connections with bench/idle_conns (one ping each, then held idle,
#      well within discernd's idle timeout), reads the memory, runs check+settle
#      load on a few more connections while they are held, reads it again;
#   4. after the idle connections closed, reads it a last time,
# and prints one table: phase, RSS MB, HWM MB, verdict against 200 MB.
#
# Every step is bounded in time (timeout), and discernd is stopped by pid on exit.
# Exit status: 0 when every step succeeded and the peak (VmHWM) stayed under the
# target, 1 when the target was missed, 2 when the harness failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command_line="bench/memory.sh $*"
budgets=100000
connections=10000
hold=12
load_connections=4
load_s=3
store=sqlite
workers=
durability=full
build=1
keep_logs=0
target_mb=200

usage() {
    sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --budgets N           budgets created and checked (default 100000)
  --connections N       idle connections held (default 10000)
  --hold S              seconds the idle connections are held (default 12, at least 8)
  --load-connections N  connections of the load run while they are held (default 4)
  --load-seconds S      seconds of that load run (default 3; the hold must outlast it)
  --store S             sqlite (default: a file in the temporary folder) or memory
                        (no store: shows what the SQLite page cache costs)
  --workers N           discernd worker threads (default: one per CPU)
  --durability D        full (default), batch or off
  --no-build            use the existing build-rel/
  --keep-logs           keep the temporary folder with the logs
EOF
}

die() { echo "memory.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --budgets) [ $# -ge 2 ] || die "--budgets needs a value"; budgets=$2; shift ;;
        --connections) [ $# -ge 2 ] || die "--connections needs a value"; connections=$2; shift ;;
        --hold) [ $# -ge 2 ] || die "--hold needs a value"; hold=$2; shift ;;
        --load-connections) [ $# -ge 2 ] || die "--load-connections needs a value"; load_connections=$2; shift ;;
        --load-seconds) [ $# -ge 2 ] || die "--load-seconds needs a value"; load_s=$2; shift ;;
        --store) [ $# -ge 2 ] || die "--store needs a value"; store=$2; shift ;;
        --workers) [ $# -ge 2 ] || die "--workers needs a value"; workers=$2; shift ;;
        --durability) [ $# -ge 2 ] || die "--durability needs a value"; durability=$2; shift ;;
        --no-build) build=0 ;;
        --keep-logs) keep_logs=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ "$budgets" =~ ^[0-9]+$ ]] && [ "$budgets" -ge 100 ] && [ "$budgets" -le 10000000 ] ||
    die "--budgets: expected 100..10000000, got '$budgets'"
[[ "$connections" =~ ^[0-9]+$ ]] && [ "$connections" -ge 1 ] && [ "$connections" -le 100000 ] ||
    die "--connections: expected 1..100000, got '$connections'"
[[ "$hold" =~ ^[0-9]+$ ]] && [ "$hold" -ge 8 ] && [ "$hold" -le 250 ] ||
    die "--hold: expected whole seconds in 8..250 (under the idle timeout), got '$hold'"
[[ "$load_connections" =~ ^[0-9]+$ ]] && [ "$load_connections" -ge 1 ] && [ "$load_connections" -le 100 ] ||
    die "--load-connections: expected 1..100, got '$load_connections'"
[[ "$load_s" =~ ^[0-9]+$ ]] && [ "$load_s" -ge 1 ] && [ "$load_s" -le $((hold - 5)) ] ||
    die "--load-seconds: expected whole seconds in 1..hold-5 ($((hold - 5))), got '$load_s'"
case "$store" in sqlite) store_path=discern.db ;; memory) store_path= ;; *) die "--store: expected sqlite or memory, got '$store'" ;; esac
[ -n "$workers" ] || workers=$(nproc)
[[ "$workers" =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] || die "--workers: expected a count, got '$workers'"
case "$durability" in full|batch|off) ;; *) die "--durability: expected full, batch or off, got '$durability'" ;; esac
command -v timeout >/dev/null || die "timeout not found"

# Both discernd and idle_conns hold one descriptor per connection (plus a few).
need_fds=$((connections + load_connections + 256))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] || [ "$nofile" -ge "$need_fds" ] ||
    die "$connections connections need $need_fds open files, the hard limit is $nofile"

# --- processes and cleanup ---------------------------------------------------------
source "$root/bench/lib.sh"
bench_init discern-mem

# --- build -------------------------------------------------------------------------
build_release discernd loadgen idle_conns

# --- discernd ----------------------------------------------------------------------
token=mem-$$-$RANDOM
start_discernd "$tmp" "max_connections = $((connections + load_connections + 100))" \
    "max_connections_per_address = 0" \
    "idle_timeout_s = 300"
pid=$dsc_pid
port=$dsc_port

alive() { kill -0 "$pid" 2>/dev/null || { tail -20 "$tmp/discernd.log"; die "discernd died ($1)"; }; }

rows=()
sample() { # sample PHASE: one row "phase|rss_kb|hwm_kb|threads"
    alive "$1"
    local rss hwm thr
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
    thr=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
    rows+=("$1|$rss|$hwm|$thr")
    printf '  %-58s RSS %7.1f MB  HWM %7.1f MB\n' "$1" "$(echo "$rss / 1024" | bc -l)" \
        "$(echo "$hwm / 1024" | bc -l)" >&2
    { echo "== $1"; cat "/proc/$pid/smaps_rollup" 2>/dev/null; } >>"$tmp/smaps.log"
}
command -v bc >/dev/null || die "bc not found"

echo "command: $command_line"
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(awk '/^MemTotal:/ { printf "%.0f GB RAM", $2 / 1048576 }' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "discernd: $workers workers, store $store, durability $durability, max_connections $((connections + load_connections + 100)), open files $nofile"

sleep 0.5
sample "start"

# --- budgets and their counters ------------------------------------------------------
t0=$(date +%s.%N)
timeout 600 "$bin/loadgen" --port "$port" --setup-budgets users --users "$budgets" \
    --admin-token "$token" --timeout 580 >"$tmp/setup.log" 2>&1 ||
    { cat "$tmp/setup.log"; die "budget setup through the API failed"; }
t1=$(date +%s.%N)
echo "  $budgets budget.set in $(printf '%.1f' "$(echo "$t1 - $t0" | bc -l)") s" >&2
sample "$budgets budgets created (budget.set)"

# every user once: ~budgets checks (with reserve) and their settles, 50 connections
n=$((2 * budgets + 2 * 50 * 16))
t0=$(date +%s.%N)
timeout 600 "$bin/loadgen" --port "$port" -c 50 -P 16 -n "$n" --timeout 580 --sequential \
    --users "$budgets" --kv >"$tmp/checks.log" 2>&1 ||
    { cat "$tmp/checks.log"; die "check+settle on every budget failed"; }
t1=$(date +%s.%N)
checks=$(sed -n 's/^  check *\([0-9]*\).*/\1/p' "$tmp/checks.log")
settles=$(sed -n 's/^  settle *\([0-9]*\).*/\1/p' "$tmp/checks.log")
[ "${checks:-0}" -ge "$budgets" ] || { cat "$tmp/checks.log"; die "only ${checks:-0} checks for $budgets users"; }
echo "  $checks checks + $settles settles in $(printf '%.1f' "$(echo "$t1 - $t0" | bc -l)") s, 0 errors" >&2
sample "+ a check and a settle on each ($checks + $settles)"

# --- connections -----------------------------------------------------------------------
rm -f "$tmp/ready"
timeout $((hold + 150)) "$bin/idle_conns" --port "$port" -c "$connections" --hold "$hold" \
    --timeout 60 --ready-file "$tmp/ready" --kv >"$tmp/idle.log" 2>&1 &
idle_pid=$!
pids+=("$idle_pid")
wait_file "$tmp/ready" "$idle_pid" "$tmp/idle.log" 700 "idle_conns failed to open the connections"
[ -s "$tmp/ready" ] || { cat "$tmp/idle.log"; die "idle_conns not ready after 70 s"; }
ready_at=$(date +%s)
sleep 1
sample "+ $connections idle connections (one ping each)"

# the load runs in the background; its progress (RSS every 10 s) goes to stderr
timeout $((load_s + 60)) "$bin/loadgen" --port "$port" -c "$load_connections" -P 16 -d "$load_s" \
    --users "$budgets" --kv >"$tmp/load.log" 2>&1 &
load_pid=$!
pids+=("$load_pid")
load_t0=$(date +%s)
next_print=10
while kill -0 "$load_pid" 2>/dev/null; do
    sleep 1
    t=$(($(date +%s) - load_t0))
    if [ "$t" -ge "$next_print" ] && kill -0 "$load_pid" 2>/dev/null; then
        next_print=$((next_print + 10))
        alive "load"
        printf '    load, %3d s: RSS %7.1f MB\n' "$t" \
            "$(awk '/^VmRSS:/ { print $2 / 1024 }' "/proc/$pid/status")" >&2
    fi
done
rc=0
wait "$load_pid" || rc=$?
pids=("$pid" "$idle_pid")
[ "$rc" = 0 ] || { cat "$tmp/load.log"; die "load on $load_connections connections failed"; }
load_end=$(date +%s)
load_rps=$(sed -n 's/^RESULT rps=\([0-9]*\).*/\1/p' "$tmp/load.log")
[ $(($(date +%s) - ready_at)) -lt "$hold" ] ||
    die "the load ran past the hold: the idle connections were already closing (raise --hold)"
sample "+ check+settle on $load_connections more connections (${load_rps} req/s, ${load_s} s)"

wait "$idle_pid" || rc=$?
pids=("$pid")
[ "$rc" = 0 ] || { cat "$tmp/idle.log"; die "not every idle connection answered both pings"; }
idle_result=$(grep '^RESULT' "$tmp/idle.log")
echo "  idle_conns: ${idle_result#RESULT }" >&2
sleep 1
sample "idle connections closed ($(($(date +%s) - load_end)) s after the load)"

# --- the table -------------------------------------------------------------------------
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "memory of the peak phase (smaps_rollup, kB):"
python3 - "$tmp/smaps.log" <<'EOF'
import sys
blocks, cur = {}, None
for line in open(sys.argv[1]):
    if line.startswith("== "):
        cur = line[3:].strip(); blocks[cur] = {}
    elif cur and ":" in line and not line.startswith(" "):
        k, _, v = line.partition(":")
        parts = v.split()
        if parts and parts[-1] == "kB":
            blocks[cur][k] = int(parts[0])
peak = max(blocks, key=lambda b: blocks[b].get("Rss", 0))
b = blocks[peak]
print(f"  ({peak}) " + ", ".join(f"{k} {b.get(k, 0)}" for k in
      ("Rss", "Anonymous", "Pss_File", "Shared_Clean", "Private_Dirty")))
EOF
python3 - "$target_mb" "${rows[@]}" <<'EOF'
import sys
target = float(sys.argv[1])
print()
print(f"| phase | RSS MB | HWM MB | threads | verdict (< {target:.0f} MB) |")
print("|---|---:|---:|---:|---|")
worst = 0.0
for row in sys.argv[2:]:
    phase, rss, hwm, thr = row.split("|")
    rss, hwm = int(rss) / 1024, int(hwm) / 1024
    worst = max(worst, hwm)
    print(f"| {phase} | {rss:.1f} | {hwm:.1f} | {thr} | {'pass' if hwm < target else 'MISSED'} |")
print()
print(f"peak (VmHWM) {worst:.1f} MB: target {'met' if worst < target else 'MISSED'} (< {target:.0f} MB)")
sys.exit(0 if worst < target else 1)
EOF
