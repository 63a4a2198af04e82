#!/usr/bin/env bash
# Coverage-guided fuzzing of the trace agent (trace-agent/fuzz, cargo-fuzz + libFuzzer): every
# target for a bounded time, seeded from testdata/ddtrace-captures and trace-agent/fuzz/seeds
# (plus the regression inputs). Fails on a crash (panic, abort), a timeout, or memory past the
# limit; the failing input is kept under $FUZZ_ARTIFACTS and the way to replay it is printed.
#
#   bash scripts/fuzz.sh                 # every target, 30 s each
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh decode_v05 http_handler
#
# Environment: FUZZ_SECONDS (per target, default 30), FUZZ_RSS_MB (default 2048),
# FUZZ_MAX_LEN (bytes, default 262144), FUZZ_TIMEOUT (seconds per input, default 10),
# FUZZ_ARTIFACTS (default a temporary directory), FUZZ_TARGET_DIR (build cache).
# Installs the nightly toolchain and cargo-fuzz when missing (cargo-fuzz is cached in
# $XDG_CACHE_HOME/apm/bin, ~40 s to build the first time).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/apm
seconds=${FUZZ_SECONDS:-30}
rss_mb=${FUZZ_RSS_MB:-2048}
max_len=${FUZZ_MAX_LEN:-262144}
timeout=${FUZZ_TIMEOUT:-10}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$cache/fuzz-target}

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (rustup)" >&2
  rustup toolchain install nightly --profile minimal >&2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  if [ ! -x "$cache/bin/cargo-fuzz" ]; then
    echo "== installing cargo-fuzz into $cache/bin" >&2
    cargo install cargo-fuzz --locked --root "$cache" >&2
  fi
  export PATH="$cache/bin:$PATH"
fi

cd "$root/trace-agent/fuzz"
echo "== building the fuzz targets (nightly, no sanitizer: the agent has no unsafe code)" >&2
build_start=$(date +%s)
cargo +nightly fuzz build -s none >&2
echo "== built in $(( $(date +%s) - build_start )) s" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts=${FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"
captures="$root/testdata/ddtrace-captures"

# Seeds: hand-written ones, regression inputs, and the captured ddtrace bodies (for the HTTP
# target with the selector bytes of trace_agent::fuzzing: method, path, 1 header, content-type
# msgpack).
seed() {
  local t=$1 dir=$2
  cp "seeds/$t/"* "$dir/" 2>/dev/null || true
  cp "regressions/$t/"* "$dir/" 2>/dev/null || true
  local f name
  for f in "$captures"/*/agent/*.body.bin; do
    name=$(basename "$(dirname "$(dirname "$f")")")_$(basename "$f")
    case "$t:$f" in
      decode_v04:*_v0.4_traces.body.bin | decode_v05:*_v0.5_traces.body.bin | decode_stats:*_v0.6_stats.body.bin)
        cp "$f" "$dir/$name" ;;
      http_handler:*_v0.4_traces.body.bin) { printf '\000\000\001\000\n'; cat "$f"; } >"$dir/$name" ;;
      http_handler:*_v0.5_traces.body.bin) { printf '\000\001\001\000\n'; cat "$f"; } >"$dir/$name" ;;
      http_handler:*_v0.6_stats.body.bin) { printf '\000\007\001\000\n'; cat "$f"; } >"$dir/$name" ;;
    esac
  done
}

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
failed=()
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus"
  seed "$t" "$corpus"
  echo "== fuzzing $t for ${seconds} s ($(ls "$corpus" | wc -l) seeds, rss limit ${rss_mb} MB, max_len ${max_len})" >&2
  if ! cargo +nightly fuzz run -s none "$t" "$corpus" -- \
      -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" \
      -max_len="$max_len" -timeout="$timeout" -artifact_prefix="$artifacts/$t-" \
      -print_final_stats=1 2>"$work/$t.log"; then
    failed+=("$t")
    tail -n 40 "$work/$t.log" >&2
  else
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$work/$t.log" | sed "s/^/  $t /" >&2 || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "FUZZING FAILED: ${failed[*]}" >&2
  echo "failing inputs:" >&2
  ls -l "$artifacts" >&2
  echo "keep each as a regression once fixed: cp <input> trace-agent/fuzz/regressions/<target>/ " \
       "(replayed by cargo test -p trace-agent --test fuzz_regressions)" >&2
  if [ -z "${FUZZ_ARTIFACTS:-}" ]; then
    mkdir -p "$root/target/fuzz-artifacts" && cp "$artifacts"/* "$root/target/fuzz-artifacts/" 2>/dev/null || true
    echo "copied to $root/target/fuzz-artifacts" >&2
  fi
  exit 1
fi
echo "== fuzzing: ${#targets[@]} targets, ${seconds} s each, no finding" >&2
