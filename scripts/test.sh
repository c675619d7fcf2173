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

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
