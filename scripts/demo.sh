#!/usr/bin/env bash
# The README's demo: starts our trace-agent on loopback, runs an instrumented example
# against it, and prints what the agent received (`trace-agent status`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
requests=${REQUESTS:-40}

echo "== building (release)"
cargo build --release -q -p trace-agent -p apm --example quickstart --bin trace-agent

port=${DD_APM_RECEIVER_PORT:-8126}
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "port 8126 is taken; using $port"
fi
agent_log=$(mktemp -t trace-agent.XXXX.log)
"$CARGO_TARGET_DIR/release/trace-agent" run --port "$port" >"$agent_log" 2>&1 &
agent=$!
trap 'kill -TERM $agent 2>/dev/null; wait $agent 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 $agent 2>/dev/null || { cat "$agent_log"; exit 1; }
  sleep 0.1
done
echo "== trace-agent listening on 127.0.0.1:$port (log: $agent_log)"

echo "== sending $requests traced requests (service flask-demo, env demo)"
DD_SERVICE=flask-demo DD_ENV=demo DD_VERSION=1.0 DD_TRACE_AGENT_URL="http://127.0.0.1:$port" \
  "$CARGO_TARGET_DIR/release/examples/quickstart" "$requests"

echo "== trace-agent status"
"$CARGO_TARGET_DIR/release/trace-agent" status --port "$port"
