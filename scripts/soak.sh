#!/usr/bin/env bash
# The long crash soak (not part of the test command): SIGKILL `annals load` at random moments
# while 64 writers append with fsync durability, 1,000 times; after every kill the store is
# opened and every acknowledged append must be there once, at its stream, revision and position,
# with revisions contiguous and positions dense, and `check` clean. A fresh store every 100
# cycles keeps each check bounded. Prints a summary line at the end.
#
# Environment: ANNALS_SOAK_CYCLES (1000), ANNALS_SOAK_WRITERS (64), ANNALS_SOAK_STORE_CYCLES (100),
# SOAK_TIMEOUT (seconds, 14400).
set -euo pipefail
cd "$(dirname "$0")/.."
export ANNALS_SOAK_CYCLES="${ANNALS_SOAK_CYCLES:-1000}"
export ANNALS_SOAK_WRITERS="${ANNALS_SOAK_WRITERS:-64}"
export ANNALS_SOAK_STORE_CYCLES="${ANNALS_SOAK_STORE_CYCLES:-100}"
exec timeout "${SOAK_TIMEOUT:-14400}" cargo test --release --locked -p annals-cli --test cli \
  -- --ignored --exact crash::soak_sigkill_cycles --nocapture
