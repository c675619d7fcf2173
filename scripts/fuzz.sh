#!/usr/bin/env bash
# Runs every fuzz target (fuzz/) for a bounded time each, one after another, with one worker.
# Not part of the gate: the gate replays the committed corpus on stable (crates/annals-fuzz).
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh grpc_request http_body
#
# New inputs go to fuzz/runs/<target>/ (ignored by git); the committed seeds in
# fuzz/corpus/<target>/ are read, never written. A crash stops the script with a non-zero status
# and names the input that caused it (fuzz/artifacts/<target>/); replay it with
#   cargo +nightly fuzz run <target> <artifact>
# and, once fixed, copy it into fuzz/corpus/<target>/ so the stable tests replay it for ever.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
# A single input slower than this is reported as a hang.
input_timeout="${FUZZ_INPUT_TIMEOUT:-20}"
all_targets=(segment_recovery record_decode index_open grpc_request http_body projection_toml stream_name filter_regex)
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=("${all_targets[@]}")
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "error: cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

echo "building the fuzz targets (fuzz/target)" >&2
(cd fuzz && timeout 7200 cargo +nightly fuzz build -O)

failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/runs/$t" "fuzz/artifacts/$t"
  log="fuzz/runs/$t.log"
  echo "fuzzing $t for ${seconds}s (log: $log)" >&2
  status=0
  # The outer timeout is a backstop: libFuzzer stops itself at -max_total_time.
  (cd fuzz && timeout $((seconds + 600)) cargo +nightly fuzz run -O "$t" "runs/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout="$input_timeout" -rss_limit_mb=4096 \
    -jobs=1 -workers=1 -print_final_stats=1) >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|cov: ' "$log" | tail -3 >&2 || true
  if [ "$status" -ne 0 ]; then
    failed=1
    echo "error: $t failed (exit $status); the input is in fuzz/artifacts/$t/:" >&2
    grep -E 'Test unit written to|panicked at|Violation|ERROR' "$log" | head -5 >&2 || true
    ls -t "fuzz/artifacts/$t" | head -3 | sed "s|^|  fuzz/artifacts/$t/|" >&2
  fi
done
exit "$failed"
