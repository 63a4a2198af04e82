#!/usr/bin/env bash
# The test command of the README: installs the real peers (Python venv), then runs every
# Rust test of the workspace (unit, integration against ddapm-test-agent and ddtrace, end to end).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
APM_PEER_VENV=$(bash scripts/peer-venv.sh)
export APM_PEER_VENV
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
  cargo test --workspace --doc
fi
