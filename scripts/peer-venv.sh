#!/usr/bin/env bash
# Creates (or reuses) the Python venv holding the real peer clients the tests drive:
# ddtrace + Flask (the Flask demo) and ddapm-test-agent, pinned by testdata/peer/requirements.lock.txt.
# Prints the venv path on stdout. PyPI is the only thing it needs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${APM_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/apm/peer-venv}
lock="$root/testdata/peer/requirements.lock.txt"
stamp="$venv/.installed"
want="ddtrace flask ddapm-test-agent msgpack"
[ -f "$lock" ] && want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ -x "$venv/bin/ddapm-test-agent" ] && [ -x "$venv/bin/ddtrace-run" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv"; exit 0
fi
echo "installing peer clients into $venv" >&2
python3 -m venv "$venv" >&2
"$venv/bin/pip" install -q --upgrade pip >&2
if [ -f "$lock" ]; then
  "$venv/bin/pip" install -q -r "$lock" >&2
else
  "$venv/bin/pip" install -q ddtrace flask ddapm-test-agent msgpack >&2
fi
echo "$want" > "$stamp"
echo "$venv"
