#!/usr/bin/env bash
# test.sh - install what is missing, build with warnings as errors under
# AddressSanitizer + UndefinedBehaviorSanitizer (optimised, so that -O2-only
# warnings fail too), and run every test with ctest; then every fuzz target for a
# fixed number of runs on its seed corpus (clang, a test-only dependency), three
# rounds of kill -9 under load (bench/crash.sh), and the server suites under TSan.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build-test -DDISCERN_WERROR=ON -DDISCERN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-test -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-test --output-on-failure -j"$jobs"

# Every parser under libFuzzer for a short fixed run on its corpus (bench/fuzz.sh
# --minutes N runs them longer).
if ! command -v clang >/dev/null; then
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y clang
fi
bash bench/fuzz.sh --runs 5000 --jobs "$jobs"

# kill -9 under check+settle load: nothing acknowledged may be lost; and the check
# itself must catch a loss (--tamper deletes one acknowledged settle: exit 1).
bash bench/crash.sh --rounds 3 --bin build-test/bin
rc=0
bash bench/crash.sh --rounds 1 --bin build-test/bin --tamper >/dev/null 2>&1 || rc=$?
[ "$rc" = 1 ] || { echo "bench/crash.sh --tamper: exit $rc, expected 1 (a lost settle)" >&2; exit 1; }

# The threaded server again under ThreadSanitizer: discernd is instrumented and the
# integration tests fail on any report it logs (see tests/server/CMakeLists.txt).
cmake -S . -B build-tsan -DDISCERN_WERROR=ON -DDISCERN_TSAN=ON -DDISCERN_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-tsan -j"$jobs"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -j"$jobs" -R '^server/'
