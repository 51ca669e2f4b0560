#!/usr/bin/env bash
# test.sh - install what is missing, build with warnings as errors under
# AddressSanitizer + UndefinedBehaviorSanitizer (optimised, so that -O2-only
# warnings fail too), and run every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build-test -DDISCERN_WERROR=ON -DDISCERN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-test -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-test --output-on-failure -j"$jobs"

# The threaded server again under ThreadSanitizer: discernd is instrumented and the
# integration tests fail on any report it logs (see tests/server/CMakeLists.txt).
cmake -S . -B build-tsan -DDISCERN_WERROR=ON -DDISCERN_TSAN=ON -DDISCERN_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-tsan -j"$jobs"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -j"$jobs" -R '^server/'
