#!/usr/bin/env bash
# Whole-process throughput of the release trace agent, loopback only (examples/agent_load.rs):
# ddtrace-shaped 1000-trace payloads (built from testdata/ddtrace-captures) over keep-alive
# HTTP/1.1 connections, against
#   * Datadog mode (v0.4 and v0.5): `trace-agent run` with an API key, writing to a fake intake
#     that answers 202 at once (agent_load intake) and counts what arrives;
#   * local mode (v0.4 and v0.5): no API key, the SQLite store in a fresh directory.
# For each: LOAD_SECONDS (default 10) at saturation (LOAD_CONNECTIONS, default 4, as fast as
# the agent answers), then LOAD_SECONDS paced at LOAD_PACED_SPANS (default 50000) spans/s in a
# fresh agent for its RSS. Prints per run: accepted spans/s at saturation, delivered spans/s,
# refused (429) and dropped by reason, agent CPU-seconds per span (utime + stime from
# /proc/<pid>/stat, from the first request until everything accepted was delivered), spans per
# agent CPU-second, and peak / final RSS at the paced rate.
#
#   bash scripts/load.sh                       # all four runs, ~2 × 10 s each + start/drain
#   LOAD_SECONDS=5 LOAD_MODES="datadog" bash scripts/load.sh
#   LOAD_AGENT=/path/to/previous/trace-agent LOAD_MODES=local bash scripts/load.sh   # A/B
#
# Figures on a shared machine are noisy: compare runs made together. Files (agent logs,
# status.json, load.json, intake.json) go to $LOAD_DIR (default a new directory under
# target/load).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${LOAD_SECONDS:-10}
connections=${LOAD_CONNECTIONS:-4}
paced=${LOAD_PACED_SPANS:-50000}
modes=${LOAD_MODES:-datadog local}
versions=${LOAD_VERSIONS:-v0.4 v0.5}
dir=${LOAD_DIR:-$root/target/load/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$dir"
echo "== load: ${seconds} s per run, ${connections} connections, paced run at ${paced} spans/s; files in $dir" >&2

cargo build --release -q -p trace-agent --bin trace-agent
cargo build --release -q --example agent_load
bin=${CARGO_TARGET_DIR:-$root/target}/release
gen="$bin/examples/agent_load"
# LOAD_AGENT: another agent binary to measure (an A/B against a saved build), else the one built.
agent=${LOAD_AGENT:-$bin/trace-agent}
tck=$(getconf CLK_TCK)

# shellcheck source=procs.sh
. "$root/scripts/procs.sh"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# The fake intake (one for every Datadog-mode run; its counts are read as differences).
"$gen" intake "$dir/intake.port" "$dir/intake.json" >"$dir/intake.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/intake.port" ] && break; sleep 0.1; done
intake_port=$(cat "$dir/intake.port")

intake_spans() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("spans",0))' "$dir/intake.json" 2>/dev/null || echo 0; }

# start_agent <mode> <name>: starts an agent, sets $agent_pid and $port.
start_agent() {
  local mode=$1 name=$2
  port=$(free_port)
  if [ "$mode" = datadog ]; then
    DD_API_KEY=load0000000000000000000000000000 DD_APM_DD_URL="http://127.0.0.1:$intake_port" \
      DD_HOSTNAME=load DD_APM_LOCAL_ENABLED=false DD_APM_SPOOL_DIR="$dir/$name.spool" \
      RUST_LOG=${RUST_LOG:-warn} "$agent" run --port "$port" >"$dir/$name.agent.log" 2>&1 &
  else
    env -u DD_API_KEY DD_APM_LOCAL_ENABLED=true DD_APM_LOCAL_DATA_DIR="$dir/$name.local" \
      DD_APM_LOCAL_WEB_PORT=0 DD_APM_SPOOL_DIR="$dir/$name.spool" DD_HOSTNAME=load \
      RUST_LOG=${RUST_LOG:-warn} "$agent" run --port "$port" >"$dir/$name.agent.log" 2>&1 &
  fi
  agent_pid=$!
  pids+=("$agent_pid")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}

# wait_drained <mode> <name>: until the writer holds nothing (bounded: 30 s), plus one flush
# period for the batch being filled; leaves the agent's counters in $dir/<name>.status.json.
wait_drained() {
  local name=$2
  for _ in $(seq 300); do
    "$agent" status --port "$port" --json >"$dir/$name.status.json" 2>/dev/null || true
    if python3 - "$dir/$name.status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
busy = s.get("in_flight", 0) > 1
for w in s.get("writers", []):
    busy |= w["traces"]["queue_depth"] + w["traces"]["in_flight"] > 0
sys.exit(1 if busy else 0)
EOF
    then break; fi
    sleep 0.1
  done
  [ "$1" = datadog ] && sleep 5.5
  "$agent" status --port "$port" --json >"$dir/$name.status.json"
}

stop_agent() {
  kill -TERM "$agent_pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
}

summaries=()
for mode in $modes; do
  for v in $versions; do
    name="$mode-$v"
    # Saturation.
    start_agent "$mode" "$name"
    before_spans=$(intake_spans)
    t0=$(cpu_ticks "$agent_pid")
    "$gen" load "127.0.0.1:$port" "$v" "$seconds" "$connections" 0 "$dir/$name.load.json"
    t_load=$(cpu_ticks "$agent_pid")
    wait_drained "$mode" "$name"
    t1=$(cpu_ticks "$agent_pid")
    after_spans=$(intake_spans)
    stop_agent
    # Paced, for RSS (a fresh agent).
    start_agent "$mode" "$name-paced"
    "$gen" load "127.0.0.1:$port" "$v" "$seconds" 2 "$paced" "$dir/$name-paced.load.json" &
    loader=$!
    peak=0
    while kill -0 "$loader" 2>/dev/null; do
      r=$(rss_kb "$agent_pid"); [ "${r:-0}" -gt "$peak" ] && peak=$r
      sleep 0.5
    done
    wait "$loader" || true
    final=$(rss_kb "$agent_pid")
    p0=$(cpu_ticks "$agent_pid")
    "$agent" status --port "$port" --json >"$dir/$name-paced.status.json" 2>/dev/null || true
    stop_agent
    python3 - "$dir" "$name" "$mode" "$tck" "$t0" "$t_load" "$t1" "$before_spans" "$after_spans" "$peak" "$final" <<'EOF' | tee "$dir/$name.summary.txt"
import json, sys
d, name, mode, tck, t0, t_load, t1, before, after, peak, final = sys.argv[1:]
tck, t0, t_load, t1 = int(tck), int(t0), int(t_load), int(t1)
load = json.load(open(f"{d}/{name}.load.json"))
paced = json.load(open(f"{d}/{name}-paced.load.json"))
st = json.load(open(f"{d}/{name}.status.json"))
secs = load["seconds"]
acc = load["accepted_spans"]
per_trace = load["spans_per_payload"] / 1000
writer = next((w for w in st["writers"] if w["name"] == mode), None)
wt = writer["traces"] if writer else {}
if mode == "datadog":
    delivered = int(after) - int(before)
else:
    delivered = round(wt.get("items_sent", 0) * per_trace)
drops = {f"receiver:{r}": c["spans"] for r, c in st["dropped"].items() if c["spans"]}
drops.update({f"writer:{r}": round(n * per_trace) for r, n in wt.get("dropped_items", {}).items() if n})
if wt.get("spooled_items"):
    drops["writer:spooled"] = round(wt["spooled_items"] * per_trace)
cpu = (t1 - t0) / tck
cpu_load = (t_load - t0) / tck
print(f"{name}: accepted {acc/secs/1e3:,.0f} k spans/s at saturation ({acc:,} spans in {secs:.1f} s, "
      f"{load['connections']} connections); refused 429: {load['refused_429_spans']:,} spans; "
      f"other replies: {load['other_codes'] or 'none'}")
print(f"  delivered {delivered/secs/1e3:,.0f} k spans/s ({delivered:,} spans, {100*delivered/max(acc,1):.1f} % of accepted); "
      f"dropped: {drops or 'none'}")
print(f"  agent CPU: {cpu:.1f} s ({cpu_load:.1f} s during the load, {cpu_load/secs:.2f} cores); "
      f"{1e6*cpu/max(acc,1):.2f} µs per span = {acc/max(cpu,1e-9)/1e3:,.0f} k spans per CPU-second")
print(f"  paced at {paced['target_spans_per_second']/1e3:,.0f} k spans/s: accepted "
      f"{paced['accepted_spans']/paced['seconds']/1e3:,.0f} k spans/s, RSS peak {int(peak)/1024:.0f} MiB, "
      f"final {int(final)/1024:.0f} MiB")
EOF
    summaries+=("$dir/$name.summary.txt")
  done
done
echo "== summary ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
cat "${summaries[@]}"
