# Sourced by the load and soak scripts: background processes they start (append their pids to
# `pids`) are killed when the script exits, and `free_port` prints a free loopback port.
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
