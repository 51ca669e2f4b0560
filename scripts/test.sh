#!/usr/bin/env bash
# test.sh - install what is missing, build with warnings as errors under
# AddressSanitizer + UndefinedBehaviorSanitizer (optimised, so that -O2-only
# warnings fail too), and run every test with ctest (the browser test included);
# then every fuzz target for a fixed number of runs on its seed corpus, three rounds
# of kill -9 under load (bench/crash.sh), and the server suites under TSan.
# Test-only packages (chromium, node and the pinned npm packages, clang for libFuzzer)
# are installed here, not by scripts/up.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
# Test-only: the browser test (tests/browser/) drives Debian's chromium with
# playwright-core, pinned in tests/browser/package-lock.json (no browser is
# downloaded); the fuzz targets need clang and its runtimes (libclang-rt-dev). node
# and npm are looked for as commands: a node from elsewhere may bring its own npm,
# which Debian's npm package would conflict with.
missing=()
for p in chromium clang libclang-rt-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
(cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build-test -DDISCERN_WERROR=ON -DDISCERN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-test -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-test --output-on-failure -j"$jobs"

# The Release build (-O3) the benchmarks and `scripts/up.sh` use, warnings as errors
# too: the optimiser sees paths (maybe-uninitialized) the sanitizer build does not.
cmake -S . -B build-rel-check -DDISCERN_WERROR=ON -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF
cmake --build build-rel-check -j"$jobs"

# Every parser under libFuzzer for a short fixed run on its corpus (bench/fuzz.sh
# --minutes N runs them longer).
bash bench/fuzz.sh --runs 5000 --jobs "$jobs"

# kill -9 under check+settle load: nothing acknowledged may be lost; and the check
# itself must catch a loss (--tamper deletes one acknowledged settle: exit 1).
bash bench/crash.sh --rounds 3 --bin build-test/bin
rc=0
bash bench/crash.sh --rounds 1 --bin build-test/bin --tamper >/dev/null 2>&1 || rc=$?
[ "$rc" = 1 ] || { echo "bench/crash.sh --tamper: exit $rc, expected 1 (a lost settle)" >&2; exit 1; }

# The threaded server and the ledger's threads again under ThreadSanitizer: discernd
# is instrumented and the integration tests fail on any report it logs (see
# tests/server/CMakeLists.txt); core/test_ledger_tsan, a plain program (Criterion
# cannot run under TSan), runs the ledger's threads in memory and over a store and
# fails on the first report (halt_on_error), in a few seconds.
cmake -S . -B build-tsan -DDISCERN_WERROR=ON -DDISCERN_TSAN=ON -DDISCERN_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-tsan -j"$jobs"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -j"$jobs" \
  -R '^(server/|core/test_ledger_tsan$)'
