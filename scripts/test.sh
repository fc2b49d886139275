#!/usr/bin/env bash
# Runs every test of every module in the workspace, with the race detector, against the Redis
# at $CHAT_TEST_REDIS_ADDR (default 127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t modules < <(go list -m -f '{{.Dir}}/...')
go test -race -count=1 -timeout 15m "$@" "${modules[@]}"
