#!/usr/bin/env bash
# The one gate: what CI and people run alike. Installs what the tests need if it is missing, then
# checks formatting, lints, and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install the Rust toolchain (rustup, stable >= 1.90) first" >&2
  exit 1
fi

# The real KurrentDB client libraries the compatibility tests drive (Python, Node).
./scripts/install-clients.sh

# PostgreSQL's server binaries: the projection tests start throwaway servers with initdb/pg_ctl.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL server binaries (Debian package postgresql)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y postgresql >&2
fi

# NATS with JetStream: the relay tests start throwaway servers (and kill them).
if ! command -v nats-server >/dev/null 2>&1; then
  echo "installing the NATS server (Debian package nats-server)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y nats-server >&2
fi

# RabbitMQ: the relay tests start throwaway brokers (and kill them).
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing the RabbitMQ server (Debian package rabbitmq-server)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y rabbitmq-server >&2
fi

# Real browsers for the admin UI tests (headless; nothing downloads a browser at test time):
# Chromium with its chromedriver, and Firefox ESR, from Debian.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
  || ! command -v firefox-esr >/dev/null 2>&1; then
  echo "installing Chromium, chromedriver and Firefox ESR (Debian packages chromium chromium-driver firefox-esr)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y chromium chromium-driver firefox-esr >&2 \
    || { $sudo_cmd apt-get update >&2 && $sudo_cmd apt-get install -y chromium chromium-driver firefox-esr >&2; } \
    || { echo "error: could not install chromium, chromium-driver and firefox-esr; the UI tests need them" >&2; exit 1; }
fi
# geckodriver, Firefox's WebDriver server, is not a Debian package: cargo installs it into its bin
# directory, which the UI tests also look in.
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v geckodriver >/dev/null 2>&1; then
  echo "installing geckodriver (cargo install --locked geckodriver)" >&2
  cargo install --locked geckodriver >&2 \
    || { echo "error: could not install geckodriver; the Firefox UI tests need it" >&2; exit 1; }
fi
for tool in chromium chromedriver firefox-esr geckodriver; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is still missing after installing it; the UI tests need it" >&2
    exit 1
  fi
done

cargo fmt --all -- --check

# Lints and tests in one build. Clippy runs as the compiler of the workspace's own crates while
# the tests build (clippy-driver as cargo's RUSTC_WORKSPACE_WRAPPER, exactly what `cargo clippy`
# does, but compiling to code instead of stopping after the checks), with every warning an error:
# the same lints as `cargo clippy --workspace --all-targets -- -D warnings`, while the
# dependencies are compiled once instead of once for clippy and again for the tests.
clippy_driver="$(command -v clippy-driver || true)"
if [ -z "$clippy_driver" ]; then
  echo "error: clippy-driver not found; install clippy (rustup component add clippy)" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# A clean build gains nothing from incremental compilation's bookkeeping.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The benches' official-client mode (`--features kurrentdb-client`, off in the shipped binary) is
# built and tested too, so no case is dropped.
cargo test --workspace --locked --features annals-cli/kurrentdb-client

# One suite, two backends: the gRPC tests through the official KurrentDB client and the HTTP API
# tests once more, each server's store a replica of a store in PostgreSQL (a database per test
# on one throwaway server). The engine's model test runs on both stores in the run above.
# The same features as the run above, so nothing but `with-postgres` is built again.
cargo build --workspace --locked --features annals-cli/kurrentdb-client --bin with-postgres
"${CARGO_TARGET_DIR:-target}/debug/with-postgres" bash -c '
  cargo test --workspace --locked --features annals-cli/kurrentdb-client --test grpc kurrentdb_client &&
  cargo test --workspace --locked --features annals-cli/kurrentdb-client --test api'
