#!/usr/bin/env bash
# crash.sh - kill -9 discernd under check+settle load, restart it, and check that
# every settle it acknowledged is in the store.
#
#   bench/crash.sh [--rounds N] [--connections C] [--pipeline P] [--durability D]
#                  [--no-build | --bin DIR] [--keep-logs] [--tamper]
#
# Builds a Release tree (build-rel/) unless --no-build, or takes discernd and loadgen
# from DIR with --bin (scripts/test.sh uses its sanitizer build), then for each round: starts
# discernd on a free 127.0.0.1 port with the shipped policies and a SQLite store (the
# same file every round), runs bench/loadgen against it (check with reserve, then a
# settle of every reservation, through the real protocol; every connection
# authenticates with the admin token first), kills the server with SIGKILL after a
# random 0.3-1.5 s, and collects the reservations of the settles loadgen saw
# acknowledged. The next round starts on the store the killed server left; the last
# restart only reopens the store. Then the settles in the store (charges of kind
# 'settle') are compared with the acknowledged ones:
#   lost           acknowledged but not in the store: durability broken
#   over-counted   in the store but never acknowledged: settles in flight at the kill
#                  that were committed; at most the number in flight is expected
# Prints `N rounds, A acknowledged, L lost, O over-counted (<= I in-flight)`.
# --tamper deletes one acknowledged settle from the store before the comparison, to
# check that the comparison catches a loss (scripts/test.sh expects exit 1 then).
# Exit status: 0 when nothing acknowledged was lost and O <= I, 1 otherwise, 2 when
# the harness failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=10
connections=8
pipeline=8
durability=full
build=1
keep_logs=0
tamper=0
bin_dir=
workers=2
token=crash-$$-$RANDOM
store_path=crash.db

die() { echo "crash.sh: $*" >&2; exit 2; }
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=${2:?}; shift 2 ;;
    --connections) connections=${2:?}; shift 2 ;;
    --pipeline) pipeline=${2:?}; shift 2 ;;
    --durability) durability=${2:?}; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep-logs) keep_logs=1; shift ;;
    --tamper) tamper=1; shift ;;
    --bin) bin_dir=${2:?}; build=0; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds: '$rounds' is not a positive number"
[[ $connections =~ ^[1-9][0-9]*$ ]] || die "--connections: '$connections' is not a positive number"
[[ $pipeline =~ ^[1-9][0-9]*$ ]] || die "--pipeline: '$pipeline' is not a positive number"
# batch acknowledges once queued (docs/operations.md): it may lose up to batch_ms.
case $durability in full|batch) ;; *) die "--durability: full or batch (off promises nothing)" ;; esac
command -v sqlite3 >/dev/null || die "the sqlite3 tool is needed to read the store"

source "$root/bench/lib.sh"
bench_init discern-crash
if [ -n "$bin_dir" ]; then
    bin=$(cd "$bin_dir" && pwd) || die "--bin: no folder $bin_dir"
    for b in discernd loadgen; do [ -x "$bin/$b" ] || die "--bin: no $b in $bin"; done
else
    build_release discernd loadgen
fi

dir=$tmp/server
inflight=0
acked=0
for round in $(seq "$rounds"); do
    rm -f "$dir/ports"
    start_discernd "$dir"
    timeout 120 "$bin/loadgen" --port "$dsc_port" -c "$connections" -P "$pipeline" -d 60 \
        --seed "$round$RANDOM" --admin-token "$token" --ack-log "$tmp/ack.$round" --kv \
        >"$tmp/loadgen.$round.log" 2>&1 &
    load_pid=$!
    pids+=("$load_pid")
    sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.3 + (r % 1200) / 1000 }')"
    kill -9 "$dsc_pid"
    wait "$dsc_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
    stop_pid "$dsc_pid"
    stop_pid "$load_pid"
    result=$(grep '^RESULT' "$tmp/loadgen.$round.log" || true)
    [ -n "$result" ] || { cat "$tmp/loadgen.$round.log"; die "round $round: loadgen reported nothing"; }
    n=$(sed -n 's/.* settles_unanswered=\([0-9]*\).*/\1/p' <<<"$result")
    inflight=$((inflight + n))
    a=$(wc -l <"$tmp/ack.$round")
    [ "$a" -gt 0 ] || { cat "$tmp/loadgen.$round.log" "$dir/discernd.log"; die "round $round: no settle was acknowledged"; }
    acked=$((acked + a))
done

# The store as a restarted server finds it: open it once more (recovery), then read.
rm -f "$dir/ports"
start_discernd "$dir"
stop_pid "$dsc_pid"
cat "$tmp"/ack.* | sort >"$tmp/acked"
if [ "$tamper" = 1 ]; then
    victim=$(head -1 "$tmp/acked")
    sqlite3 "$dir/$store_path" "DELETE FROM events WHERE seq IN (SELECT seq FROM charges WHERE kind = 'settle' AND reservation_id = '$victim')"
fi
sqlite3 "$dir/$store_path" "SELECT reservation_id FROM charges WHERE kind = 'settle'" |
    sort >"$tmp/stored"
[ "$(sort -u "$tmp/acked" | wc -l)" -eq "$acked" ] || die "an acknowledged settle is listed twice"
lost=$(comm -23 "$tmp/acked" "$tmp/stored" | wc -l)
over=$(comm -13 "$tmp/acked" "$tmp/stored" | wc -l)
echo "$rounds rounds, $acked acknowledged, $lost lost, $over over-counted (<= $inflight in-flight)"
if [ "$lost" -gt 0 ]; then
    echo "lost, e.g.: $(comm -23 "$tmp/acked" "$tmp/stored" | head -3 | tr '\n' ' ')" >&2
    exit 1
fi
[ "$over" -le "$inflight" ] || { echo "more over-counted settles than were in flight" >&2; exit 1; }
