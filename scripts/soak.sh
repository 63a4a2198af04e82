#!/usr/bin/env bash
# Soak test of the release trace agent, loopback only: for SOAK_SECONDS (default 600), real
# clients (the ddtrace Flask demo under ddtrace-run, our tracer's quickstart example) and the
# mixed valid + hostile load of examples/soak_load.rs (many services, v0.4/v0.5/v0.7, bodies
# over the limit, garbage, slow bodies) against `trace-agent run` writing to a loopback fake
# intake (soak_load intake) that counts what arrives. Reports RSS over time, drops by reason,
# and accepted vs delivered; fails when peak RSS passes SOAK_MAX_RSS_MB (default 512) or when
#   traces accepted by the agent ≠ delivered + counted drops + spooled (± in flight: none, the
#   agent is stopped gracefully before the count).
#
#   bash scripts/soak.sh            # 10 minutes
#   SOAK_SECONDS=60 bash scripts/soak.sh   # the CI run
#   SOAK_AGENT_BIN=/path/to/trace-agent bash scripts/soak.sh   # another build (before/after figures)
#
# Output: the summary on stdout, every file (agent.log, rss.tsv, status.json, load.json,
# intake.json) in $SOAK_DIR (default a new directory under target/soak).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${SOAK_SECONDS:-600}
max_rss_mb=${SOAK_MAX_RSS_MB:-512}
dir=${SOAK_DIR:-$root/target/soak/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$dir"
echo "== soak: ${seconds} s, files in $dir" >&2

[ -n "${SOAK_AGENT_BIN:-}" ] || cargo build --release -q -p trace-agent --bin trace-agent
cargo build --release -q --example soak_load --example quickstart
bin=${CARGO_TARGET_DIR:-$root/target}/release
load="$bin/examples/soak_load"
agent_bin=${SOAK_AGENT_BIN:-$bin/trace-agent}

# shellcheck source=procs.sh
. "$root/scripts/procs.sh"

# The fake intake.
"$load" intake "$dir/intake.port" "$dir/intake.json" >"$dir/intake.log" 2>&1 &
intake_pid=$!
pids+=("$intake_pid")
for _ in $(seq 100); do [ -s "$dir/intake.port" ] && break; sleep 0.1; done
intake_port=$(cat "$dir/intake.port")

# The agent.
port=$(free_port)
DD_API_KEY=soak00000000000000000000000000000 DD_APM_DD_URL="http://127.0.0.1:$intake_port" \
  DD_HOSTNAME=soak DD_APM_LOCAL_ENABLED=false DD_APM_SPOOL_DIR="$dir/spool" \
  RUST_LOG=${RUST_LOG:-info} "$agent_bin" run --port "$port" >"$dir/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# RSS every second.
(
  start=$(date +%s)
  while kill -0 "$agent_pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$agent_pid/status" 2>/dev/null || echo 0)
    echo -e "$(( $(date +%s) - start ))\t${rss:-0}"
    sleep 1
  done
) >"$dir/rss.tsv" &
pids+=($!)

# Real clients, bounded in time: the Flask demo under ddtrace-run, and our tracer's example.
venv=${APM_PEER_VENV:-}
if [ -z "$venv" ] && [ -f scripts/peer-venv.sh ]; then
  venv=$(bash scripts/peer-venv.sh 2>>"$dir/peer-venv.log" || true)
fi
if [ -n "$venv" ] && [ -x "$venv/bin/ddtrace-run" ]; then
  app_port=$(free_port)
  DD_SERVICE=flask-soak DD_ENV=soak DD_AGENT_HOST=127.0.0.1 DD_TRACE_AGENT_PORT="$port" \
    DD_INSTRUMENTATION_TELEMETRY_ENABLED=false PORT="$app_port" PYTHONUNBUFFERED=1 \
    "$venv/bin/ddtrace-run" "$venv/bin/python" testdata/peer/flask_app.py >"$dir/flask.log" 2>&1 &
  flask_pid=$!
  pids+=("$flask_pid")
  (
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$app_port") 2>/dev/null && break; sleep 0.1; done
    end=$(( $(date +%s) + seconds ))
    n=0
    while [ "$(date +%s)" -lt "$end" ]; do
      for r in / /api/apm /api/trace /api/error; do
        curl -s -o /dev/null "http://127.0.0.1:$app_port$r" || true
        n=$((n + 1))
      done
      sleep 0.05
    done
    echo "$n" >"$dir/flask.requests"
  ) &
  flask_driver=$!
else
  echo "   (no peer venv: the ddtrace Flask demo is skipped)" >&2
  flask_pid=""
  flask_driver=""
fi
(
  end=$(( $(date +%s) + seconds ))
  while [ "$(date +%s)" -lt "$end" ]; do
    DD_TRACE_AGENT_URL="http://127.0.0.1:$port" DD_SERVICE=rust-quickstart "$bin/examples/quickstart" 40 >/dev/null 2>&1 || true
  done
) &
quick_driver=$!

# The load, then the clients finish.
"$load" load "127.0.0.1:$port" "$seconds" "$dir/load.json" >/dev/null
[ -n "$flask_driver" ] && wait "$flask_driver" || true
wait "$quick_driver" || true
if [ -n "$flask_pid" ]; then
  kill -INT "$flask_pid" 2>/dev/null || true # ddtrace flushes at exit
  for _ in $(seq 200); do kill -0 "$flask_pid" 2>/dev/null || break; sleep 0.1; done
fi

# Let the writers deliver what they hold (bounded), take the agent's counters, stop it.
for _ in $(seq 300); do
  "$agent_bin" status --port "$port" --json >"$dir/status.json" 2>/dev/null || true
  if python3 - "$dir/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
busy = sum(w["traces"]["queue_depth"] + w["traces"]["in_flight"] for w in s.get("writers", []))
sys.exit(0 if busy == 0 and s.get("in_flight", 0) <= 1 else 1)
EOF
  then break; fi
  sleep 0.1
done
sleep 6 # one flush period (5 s) for the batch being built, so the count below is final
"$agent_bin" status --port "$port" --json >"$dir/status.json"
kill -TERM "$agent_pid"
for _ in $(seq 300); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$agent_pid" 2>/dev/null; then echo "FAIL: the agent did not exit 30 s after SIGTERM" >&2; exit 1; fi
sleep 0.5

python3 - "$dir" "$max_rss_mb" <<'EOF'
import json, sys, os
d, max_rss = sys.argv[1], int(sys.argv[2])
status = json.load(open(f"{d}/status.json"))
load = json.load(open(f"{d}/load.json"))
intake = json.load(open(f"{d}/intake.json")) if os.path.exists(f"{d}/intake.json") else {"trace_chunks": 0}
rss = [(int(t), int(k)) for t, k in (l.split("\t") for l in open(f"{d}/rss.tsv") if l.strip())]
peak = max((k for _, k in rss), default=0) / 1024
print(f"duration: {load['seconds']:.0f} s; peak RSS {peak:.0f} MB (bound {max_rss} MB)")
step = max(1, len(rss) // 12)
print("RSS over time (s: MB): " + ", ".join(f"{t}: {k/1024:.0f}" for t, k in rss[::step]))
received = sum(c["traces"] for _, c in status["received"])
print(f"load generator: {load['valid_payloads']} valid payloads, {load['accepted_traces']} traces accepted (200), "
      f"{load['refused_429_traces']} refused (429); replies: {load['codes']}")
print("receiver drops by reason (payloads/traces): " +
      ", ".join(f"{r} {c['payloads']}/{c['traces']}" for r, c in sorted(status["dropped"].items())))
# Traces accepted then dropped by processing (normalization, filters) are counted without a payload.
processing = sum(c["traces"] for c in status["dropped"].values() if c["payloads"] == 0)
samplers = (status.get("forward") or {}).get("samplers") or {}
# Chunks the samplers did not keep, less those still forwarded for their single-span-sampled spans.
sampled_out = samplers.get("chunks_dropped", 0) - samplers.get("single_span_chunks", 0)
writer = next((w for w in status["writers"] if w["name"] == "datadog"), None)
wt = writer["traces"] if writer else {}
writer_dropped = sum(wt.get("dropped_items", {}).values())
spooled = wt.get("spooled_items", 0)
delivered = intake.get("trace_chunks", 0)
# The agent's own tally, before shutdown (status) — with what shutdown spooled on top.
print(f"agent: {received} traces received, {processing} dropped by processing, {sampled_out} by samplers, "
      f"{writer_dropped} by the writer {wt.get('dropped_items', {})}, {spooled} spooled; "
      f"intake: {delivered} trace chunks delivered in {intake.get('trace_requests', 0)} requests")
accounted = delivered + processing + sampled_out + writer_dropped + spooled
ok = True
if received < load["accepted_traces"]:
    print(f"FAIL: the agent counted {received} traces received, the load generator got 200 for {load['accepted_traces']}")
    ok = False
if accounted != received:
    print(f"FAIL: accepted {received} != delivered {delivered} + counted drops "
          f"{processing + sampled_out + writer_dropped} + spooled {spooled} (= {accounted})")
    ok = False
if peak > max_rss:
    print(f"FAIL: peak RSS {peak:.0f} MB > {max_rss} MB")
    ok = False
print("soak: OK" if ok else "soak: FAILED")
sys.exit(0 if ok else 1)
EOF
