#!/usr/bin/env bash
# Installs the pinned code-generation and debugging tools (versions in tools/go.mod and
# tools/buf/go.mod) into .bin/ at the repository root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export GOBIN="$root/.bin" GOWORK=off
go -C "$root/tools" install tool
go -C "$root/tools/buf" install tool
