#!/usr/bin/env bash
# run.sh - ctest's entry to the browser test (browser/test_dashboard): checks that
# node, the pinned playwright-core (npm ci in this folder, done by scripts/test.sh)
# and Debian's chromium are there, and fails saying what is missing otherwise.
#   run.sh DISCERND SOURCE_DIR ARTIFACT_DIR
set -euo pipefail
discernd=$1 source=$2 artifacts=$3
here=$(cd "$(dirname "$0")" && pwd)
chromium=${DISCERN_CHROMIUM:-/usr/bin/chromium}

fail() { echo "browser/test_dashboard: FAILED: $*" >&2; exit 1; }
command -v node >/dev/null || fail "node is not installed (apt-get install nodejs npm; scripts/test.sh does)"
[ -x "$chromium" ] || fail "chromium not found at $chromium (apt-get install chromium; scripts/test.sh does)"
[ -f "$here/node_modules/playwright-core/package.json" ] ||
  fail "playwright-core is not installed: run 'npm ci' in tests/browser (scripts/test.sh does)"

export DISCERN_CHROMIUM=$chromium
exec node "$here/test_dashboard.js" --discernd "$discernd" --source "$source" --artifacts "$artifacts"
