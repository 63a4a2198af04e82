#!/usr/bin/env bash
# The test command of the README: installs the real peers (Python venv), then runs every
# Rust test of the workspace (unit, integration against ddapm-test-agent and ddtrace, end to end).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! command -v chromium >/dev/null 2>&1; then
  # The headless browser of the web view test (tests/local_web_chromium.rs): Debian's package.
  echo "== installing chromium (apt-get)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium) >/dev/null
fi
APM_PEER_VENV=$(bash scripts/peer-venv.sh)
export APM_PEER_VENV
# The OpenTelemetry SDK + OTLP exporters (tests/agent_otlp_ingest.rs): a venv of their own.
APM_OTEL_VENV=$(bash scripts/otel-venv.sh)
export APM_OTEL_VENV
# tests/http_flask_demo.rs runs the example binary itself.
cargo build --workspace --examples -q
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
  cargo test --workspace --doc
fi
