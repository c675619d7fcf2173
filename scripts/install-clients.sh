#!/usr/bin/env bash
# Installs the real KurrentDB client libraries the compatibility tests drive, into target/clients
# (build output, never committed): the Python `kurrentdbclient` in a virtualenv and the Node
# `@kurrent/kurrentdb-client` from the lock file. Pinned versions: tests/clients/*/.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/clients
mkdir -p "$dest"

if ! command -v python3 >/dev/null 2>&1; then
  echo "error: python3 not found; the Python client test needs it (apt install python3 python3-venv)" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm not found; the Node client test needs it (apt install nodejs npm)" >&2
  exit 1
fi

req=tests/clients/python/requirements.txt
if [ ! -x "$dest/py/bin/python" ] || ! cmp -s "$req" "$dest/py/requirements.txt"; then
  rm -rf "$dest/py"
  python3 -m venv "$dest/py"
  "$dest/py/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$dest/py/requirements.txt"
fi

lock=tests/clients/node/package-lock.json
if [ ! -d "$dest/node/node_modules/@kurrent/kurrentdb-client" ] || ! cmp -s "$lock" "$dest/node/package-lock.json"; then
  rm -rf "$dest/node"
  mkdir -p "$dest/node"
  cp tests/clients/node/package.json "$lock" "$dest/node/"
  (cd "$dest/node" && npm ci --silent --no-audit --no-fund)
fi
