#!/usr/bin/env bash
# Fails when buf lint finds a problem, or when the committed generated code differs from what
# buf generates now. Needs the tools from scripts/tools.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
.bin/buf lint
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.bin/buf generate -o "$tmp"
# gen/ also holds hand-written files (validation, go.mod): compare only what buf writes.
if ! diff -r -x go.mod -x go.sum -x 'validate*.go' -x internal -x '*_test.go' "$tmp/gen" gen; then
  echo "generated code is stale: run '.bin/buf generate' and commit gen/" >&2
  exit 1
fi
echo "buf lint is clean; generated code is up to date"
