#!/usr/bin/env bash
# The README's demo, from a fresh clone: our trace-agent in local mode (no Datadog account),
# the Flask demo rewritten in axum and traced by our tracer, and traffic on its four routes
# (some of them errors). Prints the agent's per-resource table; then a second traced service
# (demo-frontend) calls the app for about two minutes — steady traffic on version 1.0, a
# 12-second incident on version 1.1 (slow and failing), recovery on 1.0 — so the service map has
# edges, the demo monitors go to ALERT and back to OK (their webhook notifications are printed),
# the charts show an anomaly and the resource pages compare the two versions.
# DEMO_STEADY_SECS=0 skips that part. When run from a terminal, everything stays up until
# Ctrl-C so you can look around.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
service=${DD_SERVICE:-flask-demo}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick() { if taken "$1"; then free_port; else echo "$1"; fi; }
wait_for() { # port pid log
  for _ in $(seq 1 300); do
    taken "$1" && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; echo "demo: process exited early (log above)"; exit 1; }
    sleep 0.1
  done
  echo "demo: nothing listens on port $1 after 30 s"; cat "$3"; exit 1
}

echo "== building (release; the first build takes a few minutes)"
cargo build --release -q -p trace-agent --bin trace-agent
cargo build --release -q -p apm --example flask_demo --example demo_traffic

agent_port=$(pick "${DD_APM_RECEIVER_PORT:-8126}")
web_port=$(pick "${DD_APM_LOCAL_WEB_PORT:-8128}")
app_port=$(pick "${PORT:-5050}")
hook_port=$(free_port)
data_dir=${DEMO_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/trace-agent-demo}
rm -rf "$data_dir" # each demo run starts from an empty store
logs=$(mktemp -d -t apm-demo.XXXX)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# The demo's monitor and its webhook (demo_traffic listens there and prints notifications).
cat >"$logs/datadog.yaml" <<YAML
apm_config:
  local:
    monitor_interval: 2s
    webhooks:
      demo: http://127.0.0.1:$hook_port/hook
    monitors:
      - name: demo-frontend errors
        service: demo-frontend
        metric: error_rate
        window: 30s
        warning: 20%
        critical: 40%
        message: 'demo-frontend error rate {{value}} ({{state}}) @webhook-demo'
      - name: demo-frontend p95
        service: demo-frontend
        metric: p95
        window: 30s
        warning: 100ms
        critical: 200ms
        message: 'demo-frontend p95 {{value}} @webhook-demo'
YAML
DD_APM_LOCAL_ENABLED=true DD_APM_LOCAL_DATA_DIR="$data_dir" DD_APM_LOCAL_WEB_PORT="$web_port" \
  "$CARGO_TARGET_DIR/release/trace-agent" run --config "$logs/datadog.yaml" --port "$agent_port" >"$logs/agent.log" 2>&1 &
pids+=($!)
wait_for "$agent_port" "${pids[-1]}" "$logs/agent.log"
wait_for "$web_port" "${pids[-1]}" "$logs/agent.log"
echo "== trace-agent on 127.0.0.1:$agent_port, local mode (store in $data_dir)"

PORT="$app_port" DD_SERVICE="$service" DD_ENV=demo DD_VERSION=1.0 \
  DD_TRACE_AGENT_URL="http://127.0.0.1:$agent_port" \
  "$CARGO_TARGET_DIR/release/examples/flask_demo" >"$logs/app.log" 2>&1 &
pids+=($!)
wait_for "$app_port" "${pids[-1]}" "$logs/app.log"
echo "== Flask demo (axum, traced) on http://127.0.0.1:$app_port, service $service"

echo "== traffic"
DEMO_WEBHOOK_PORT="$hook_port" DD_TRACE_AGENT_URL="http://127.0.0.1:$agent_port" DD_ENV=demo DD_VERSION=1.0 \
  "$CARGO_TARGET_DIR/release/examples/demo_traffic" "127.0.0.1:$app_port" "127.0.0.1:$web_port" "$service"

echo
echo "== web view: http://127.0.0.1:$web_port/  (services → resources → traces)"
echo "   service map:      http://127.0.0.1:$web_port/map?window=5m"
echo "   failing requests: http://127.0.0.1:$web_port/search?window=5m&error=true"
echo "   monitors:         http://127.0.0.1:$web_port/monitors"
echo "   span ledger:      http://127.0.0.1:$web_port/ledger  (per service: created → sent → received → kept → delivered)"
echo "   anomaly bands:    http://127.0.0.1:$web_port/services/demo-frontend?window=5m"
echo "   versions:         http://127.0.0.1:$web_port/services/demo-frontend/resources/GET%20%2Fshop%2Fapi%2Ferror?window=5m"
echo "   agent status: $CARGO_TARGET_DIR/release/trace-agent status --port $agent_port"
echo "   logs: $logs"
if [ -t 0 ] && [ -z "${DEMO_EXIT:-}" ]; then
  echo "   the agent and the app keep running; press Ctrl-C to stop"
  while kill -0 "${pids[0]}" 2>/dev/null; do sleep 1; done
fi
