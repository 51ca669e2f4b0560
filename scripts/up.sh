#!/usr/bin/env bash
# up.sh - install what is missing, build discern, and start discernd in the
# foreground on its embedded defaults: SQLite ledger in var/, the shipped policies,
# MessagePack-RPC on 127.0.0.1:7878 and var/discernd.sock, admin HTTP on
# 127.0.0.1:7879.
# Extra arguments go to discernd (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DDISCERN_WERROR=OFF
cmake --build build -j"$jobs"

mkdir -p var
exec build/bin/discernd --config server/discernd.conf "$@"
