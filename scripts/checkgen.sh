#!/usr/bin/env bash
# Fails when buf lint finds a problem, or when the committed generated code (gen/**/*.pb.go)
# differs from what buf generates now. Needs the tools from scripts/tools.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
.bin/buf lint
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.bin/buf generate -o "$tmp"
# gen/ also holds hand-written files (validation, helpers, go.mod): compare only what buf writes.
list() { (cd "$1" && find . -name '*.pb.go' | sort); }
stale=0
if ! diff <(list "$tmp/gen") <(list gen); then
  stale=1
fi
for f in $(list "$tmp/gen"); do
  if [ -f "gen/$f" ] && ! diff -u "gen/$f" "$tmp/gen/$f"; then
    stale=1
  fi
done
if [ "$stale" = 1 ]; then
  echo "generated code is stale: run '.bin/buf generate' and commit gen/" >&2
  exit 1
fi
echo "buf lint is clean; generated code is up to date"
