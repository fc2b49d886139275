#!/usr/bin/env bash
# Runs every test: the Go tests of every module in the workspace (race detector, against the
# Redis at $CHAT_TEST_REDIS_ADDR, default 127.0.0.1:6379), then the browser tests in e2e/
# (Debian's Chromium at $CHROMIUM, default /usr/bin/chromium, driven by playwright-core).
# Without Chromium the browser tests are skipped with a notice, unless CHAT_REQUIRE_BROWSER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t modules < <(go list -m -f '{{.Dir}}/...')
go test -race -count=1 -timeout 15m "$@" "${modules[@]}"

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  if [ "${CHAT_REQUIRE_BROWSER:-0}" = 1 ]; then
    echo "browser tests need Chromium at $chromium (apt-get install chromium)" >&2
    exit 1
  fi
  echo "browser tests skipped: no Chromium at $chromium (apt-get install chromium)"
  exit 0
fi
if [ ! -d e2e/node_modules/playwright-core ]; then
  npm ci --prefix e2e --no-audit --no-fund
fi
CHROMIUM="$chromium" npm test --prefix e2e
