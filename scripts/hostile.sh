#!/usr/bin/env bash
# Replays the hostile-client table of issue 10 against the release trace agent, loopback only
# (examples/hostile.rs; every case bounded in count and time, about 3 minutes in all on two
# cores). Per case it prints the status codes seen, the wall time, the agent's peak RSS
# (VmHWM) and the bound; it exits non-zero when a bound is exceeded.
#
#   bash scripts/hostile.sh                 # every case
#   bash scripts/hostile.sh 3 4             # some cases (numbers as printed)
#   HOSTILE_AGENT_BIN=/path/to/trace-agent bash scripts/hostile.sh   # another build
#
# Agent logs and data go to $HOSTILE_DIR (default a new directory under target/hostile).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=${HOSTILE_DIR:-$root/target/hostile/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$dir"
[ -n "${HOSTILE_AGENT_BIN:-}" ] || cargo build --release -q -p trace-agent --bin trace-agent
cargo build --release -q --example hostile
bin=${CARGO_TARGET_DIR:-$root/target}/release
echo "== hostile: files in $dir" >&2
exec "$bin/examples/hostile" "${HOSTILE_AGENT_BIN:-$bin/trace-agent}" "$dir" "$@"
