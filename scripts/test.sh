#!/usr/bin/env bash
# The one test command: lint, then every test against a real S3-compatible server.
#
# Installs (once) a Python venv with moto 5.2.5 (the S3 server) and the deltalake and
# pyarrow wheels (an independent Delta reader), starts the server on 127.0.0.1 behind
# a lock, runs rustfmt, clippy and the tests with cargo-nextest, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sediment-target}"
VENV="${SEDIMENT_VENV:-$HOME/.cache/sediment-venv}"

if ! "$VENV/bin/python" -c 'import moto, werkzeug, deltalake, pyarrow; assert moto.__version__ == "5.2.5"' 2>/dev/null; then
  echo "== installing moto 5.2.5, deltalake and pyarrow into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5" deltalake pyarrow
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

PORT="${SEDIMENT_S3_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
LOG="$(mktemp -t sediment-s3.XXXXXX.log)"
"$VENV/bin/python" scripts/s3_server.py 127.0.0.1 "$PORT" >"$LOG" 2>&1 &
S3_PID=$!
trap 'kill $S3_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then break; fi
  sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$PORT/" || { echo "S3 server did not start:"; cat "$LOG"; exit 1; }
echo "== S3 server (moto 5.2.5, locked) on 127.0.0.1:$PORT"

export SEDIMENT_TEST_S3_ENDPOINT="http://127.0.0.1:$PORT"
export SEDIMENT_TEST_PYTHON="$VENV/bin/python"
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
export AWS_ALLOW_HTTP=true
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc examples"
cargo test --doc --workspace --locked
echo "== build the CLI and the examples"
cargo build --locked --bin sediment --examples
export SEDIMENT_BIN="$CARGO_TARGET_DIR/debug/sediment"
echo "== bucket"
curl -s -f -X PUT "http://127.0.0.1:$PORT/sediment-tests" >/dev/null
echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
