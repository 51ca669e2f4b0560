#!/usr/bin/env bash
# auth_guess.sh - start discernd (memory store, an admin token) and measure how many
# wrong tokens it evaluates per second with bench/auth_guess: one address, then
# several loopback addresses. Prints the two result lines.
#
#   bench/auth_guess.sh [--discernd PATH] [-c N] [-d SECONDS] [--sources K]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
discernd=$root/build-rel/bin/discernd
conns=50 dur=5 sources=8
while [ $# -gt 0 ]; do
    case $1 in
    --discernd) discernd=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    -d) dur=$2; shift 2 ;;
    --sources) sources=$2; shift 2 ;;
    *) echo "usage: $0 [--discernd PATH] [-c N] [-d SECONDS] [--sources K]" >&2; exit 2 ;;
    esac
done
if [ ! -x "$root/build-rel/bin/auth_guess" ]; then
    cmake -S "$root" -B "$root/build-rel" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$root/build-rel" -j2 --target discernd auth_guess discern_data >/dev/null
fi
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$discernd" --listen 127.0.0.1:0 --unix "" --http "" --store "" --data "$root/core/data" \
    --policies "$root/policies" --admin-token "bench-$RANDOM$RANDOM" --port-file "$tmp/ports" \
    2>"$tmp/log" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.1; done
port=$(head -1 "$tmp/ports")
"$root/build-rel/bin/auth_guess" --port "$port" -c "$conns" -d "$dur" --sources 1 --kv | grep RESULT
"$root/build-rel/bin/auth_guess" --port "$port" -c "$conns" -d "$dur" --sources "$sources" --kv | grep RESULT
echo "RESULT log_lines=$(grep -c auth "$tmp/log" || true)"
