# Sourced by scripts/test.sh and scripts/with-s3.sh: installs (once) the Python venv
# with moto 5.2.5, deltalake and pyarrow, starts the locked S3 server on a free port of
# 127.0.0.1, creates the test bucket, exports the variables the tests read, and stops
# the server when the calling shell exits.
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
curl -s -f -X PUT "http://127.0.0.1:$PORT/sediment-tests" >/dev/null

