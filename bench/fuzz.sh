#!/usr/bin/env bash
# fuzz.sh - run every libFuzzer target of tests/fuzz and report executions and
# findings per target.
#
#   bench/fuzz.sh [--minutes N | --runs N] [--jobs J] [--only NAME] [--no-build]
#                 [--build-dir DIR] [--keep-corpus DIR]
#
# Builds build-fuzz/ with clang (-DDISCERN_FUZZ=ON: ASan + UBSan + coverage on the
# whole tree) unless --no-build, then runs each target on a copy of its seed corpus
# (tests/fuzz/corpus/<name>, never written to) for N minutes (--minutes, default 1)
# or N executions (--runs, what scripts/test.sh uses), J targets at a time (default
# 1). Prints one line per target: executions, executions/s, corpus size, findings
# (crash-, leak-, timeout- and oom- files libFuzzer wrote), then the totals.
# A finding is kept in build-fuzz/findings/<name>/ to be minimised and added to the
# corpus as a regression seed. Exit status: 0 when nothing was found, 1 when
# something was, 2 when the harness failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
minutes=1
runs=
jobs=1
only=
build=1
bdir=$root/build-fuzz
keep=
targets=(rpc reply config catalog window policy query store)

die() { echo "fuzz.sh: $*" >&2; exit 2; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
    --minutes) minutes=${2:?}; runs=; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --jobs) jobs=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --no-build) build=0; shift ;;
    --build-dir) bdir=${2:?}; shift 2 ;;
    --keep-corpus) keep=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ $minutes =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--minutes: '$minutes' is not a number"
[ -z "$runs" ] || [[ $runs =~ ^[0-9]+$ ]] || die "--runs: '$runs' is not a whole number"
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs: '$jobs' is not a positive number"
if [ -n "$only" ]; then
    [ -f "$root/tests/fuzz/fuzz_$only.c" ] || die "--only: no target '$only'"
    targets=("$only")
fi

if [ "$build" = 1 ]; then
    command -v clang >/dev/null || die "clang is not installed (scripts/test.sh installs it)"
    cmake -S "$root" -B "$bdir" -DCMAKE_C_COMPILER=clang -DDISCERN_FUZZ=ON -DBUILD_TESTING=OFF \
        -DDISCERN_BENCH=OFF -DDISCERN_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null \
        || die "configure failed"
    cmake --build "$bdir" -j2 --target "${targets[@]/#/fuzz_}" >/dev/null ||
        die "build failed (run cmake --build $bdir)"
fi

bdir=$(cd "$bdir" && pwd) || die "no build folder $bdir"
work=$(mktemp -d "${TMPDIR:-/tmp}/discern-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# run_one NAME: fuzz one target; leaves NAME.log and NAME.findings in $work.
run_one() {
    local t=$1 bin=$bdir/fuzz/fuzz_$1 limit
    [ -x "$bin" ] || { echo "missing $bin" >"$work/$t.log"; echo 1 >"$work/$t.findings"; return; }
    mkdir -p "$work/$t.corpus" "$work/$t.art"
    cp -r "$root/tests/fuzz/corpus/$t/." "$work/$t.corpus/"
    # The policy target also starts from the shipped policies as they are now, so the
    # corpus keeps no stale copies of them.
    if [ "$t" = policy ]; then
        for f in "$root"/policies/*.lua; do
            case $f in *_test.lua) ;; *) cp "$f" "$work/$t.corpus/shipped-$(basename "$f")" ;; esac
        done
    fi
    if [ -n "$runs" ]; then limit=(-runs="$runs"); else
        limit=(-max_total_time="$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')")
    fi
    # -max_len: inputs the size of a large request or file; -timeout: a hang is a finding.
    (cd "$work/$t.art" && "$bin" "${limit[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 -artifact_prefix="$work/$t.art/" "$work/$t.corpus" \
        >"$work/$t.log" 2>&1) || true
    find "$work/$t.art" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
        -o -name 'oom-*' -o -name 'slow-unit-*' \) | wc -l >"$work/$t.findings"
}

running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

total=0
found=0
printf '%-10s %14s %10s %8s %9s\n' target executions exec/s corpus findings
for t in "${targets[@]}"; do
    log=$work/$t.log
    execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -1)
    secs=$(awk '/stat::average_exec_per_sec/ { print $2 }' "$log" | tail -1)
    corp=$(find "$work/$t.corpus" -type f 2>/dev/null | wc -l)
    f=$(cat "$work/$t.findings" 2>/dev/null || echo 1)
    if [ -z "$execs" ]; then # libFuzzer died before its final stats: that is a finding too
        execs=0
        [ "$f" -gt 0 ] || f=1
    fi
    printf '%-10s %14s %10s %8s %9s\n' "$t" "$execs" "${secs:-0}" "$corp" "$f"
    total=$((total + execs))
    found=$((found + f))
    if [ "$f" -gt 0 ]; then
        mkdir -p "$bdir/findings/$t"
        cp "$work/$t.art"/* "$bdir/findings/$t/" 2>/dev/null || true
        cp "$log" "$bdir/findings/$t/fuzz.log"
        echo "  $t: see $bdir/findings/$t/ (log: fuzz.log)" >&2
    fi
    if [ -n "$keep" ]; then mkdir -p "$keep/$t" && cp -r "$work/$t.corpus/." "$keep/$t/"; fi
done
printf '%-10s %14s %10s %8s %9s\n' total "$total" '' '' "$found"
[ "$found" -eq 0 ]
