#!/usr/bin/env bash
# Creates (or reuses) the Python venv holding the real OpenTelemetry SDK and OTLP exporters
# (gRPC and HTTP/protobuf) that tests/agent_otlp_ingest.rs drives, pinned by
# testdata/peer/otel-requirements.lock.txt. A venv of its own: the exporters pin
# opentelemetry-proto/protobuf versions that conflict with ddtrace's peer venv.
# Prints the venv path on stdout. PyPI is the only thing it needs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${APM_OTEL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/apm/otel-venv}
lock="$root/testdata/peer/otel-requirements.lock.txt"
stamp="$venv/.installed"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv"; exit 0
fi
echo "installing the OpenTelemetry SDK and exporters into $venv" >&2
python3 -m venv "$venv" >&2
"$venv/bin/pip" install -q --upgrade pip >&2
"$venv/bin/pip" install -q -r "$lock" >&2
echo "$want" > "$stamp"
echo "$venv"
