#!/usr/bin/env bash
# W1 (compaction) and W2 (upsert) on the S3 test server behind a per-request delay,
# Sediment's CLI against the Python deltalake wheel (delta-rs), each engine on its own
# copy of the table and behind its own proxy (so its requests are counted alone).
#
#   bash scripts/s3-latency-bench.sh [DELAY_MS] [W1_FILES]
#
# DELAY_MS (default 30) is added to every request by scripts/latency-proxy.py;
# W1_FILES (default 600) small files over 10 days. Uses target/release/sediment
# (build it with `cargo build --release`), or SEDIMENT_BIN. The moto server answers
# about 300 requests a second at best: above about 10 requests in flight at 30 ms the
# figures measure the server as much as the engine (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DELAY_MS="${1:-30}"
W1_FILES="${2:-600}"
BIN="${SEDIMENT_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/sediment}"
[ -x "$BIN" ] || { echo "no sediment binary at $BIN: cargo build --release first" >&2; exit 1; }
source scripts/s3-env.sh
PY="$SEDIMENT_TEST_PYTHON"
HELPER=scripts/s3_latency_bench.py
WORK="$(mktemp -d -t sediment-s3bench.XXXXXX)"
DIRECT="$AWS_ENDPOINT_URL"
RUN="s3://sediment-tests/bench-$$"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# through_proxy LABEL CMD...: run CMD with the endpoint behind a fresh delay proxy,
# print its wall and CPU time, peak RSS, and the proxy's request counts.
through_proxy() {
  local label="$1"; shift
  local port stats proxy
  port="$(free_port)"
  stats="$WORK/$label.stats"
  python3 scripts/latency-proxy.py "$port" "${DIRECT#http://}" "$DELAY_MS" "$stats" &
  proxy=$!
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  AWS_ENDPOINT_URL="http://127.0.0.1:$port" /usr/bin/time -f "%e %U %S %M" -o "$WORK/$label.time" "$@" \
    >"$WORK/$label.out" 2>&1 || { echo "$label failed:"; cat "$WORK/$label.out"; kill "$proxy"; exit 1; }
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  read -r wall user sys rss <"$WORK/$label.time"
  printf '| %-22s | %8.2f | %8.2f | %9.0f | %s\n' "$label" "$wall" "$(echo "$user + $sys" | bc)" \
    "$(echo "$rss / 1024" | bc)" "$(cat "$stats")"
}

header() {
  echo
  echo "$1 at $DELAY_MS ms per request"
  echo "| engine                 |   wall s |    cpu s |  peak MiB | proxy"
}

echo "== W1: $W1_FILES appends of 2,000 events over 10 days (written straight to the server)"
"$PY" "$HELPER" make-w1 "$RUN/w1" "$W1_FILES"
for copy in sediment delta-rs delta-rs-16; do "$PY" "$HELPER" copy "$RUN/w1" "$RUN/w1-$copy"; done
header "W1 compaction"
through_proxy w1-sediment "$BIN" compact "$RUN/w1-sediment"
through_proxy w1-delta-rs "$PY" "$HELPER" optimize "$RUN/w1-delta-rs" 0
through_proxy w1-delta-rs-16 "$PY" "$HELPER" optimize "$RUN/w1-delta-rs-16" 16
for copy in sediment delta-rs-16; do echo "  $copy: $("$PY" "$HELPER" rows "$RUN/w1-$copy")"; done
grep -h "requests" "$WORK/w1-sediment.out" | sed 's/^/  sediment: /'

echo
echo "== W2: 10 days of 20,000 orders; an upsert of 3,000 rows of the newest 3 days and 300 new"
"$PY" "$HELPER" make-w2 "$RUN/w2" "$WORK/source.parquet"
for copy in sediment delta-rs; do "$PY" "$HELPER" copy "$RUN/w2" "$RUN/w2-$copy"; done
header "W2 upsert"
through_proxy w2-sediment "$BIN" merge "$RUN/w2-sediment" "$WORK/source.parquet" --key order_id
through_proxy w2-delta-rs "$PY" "$HELPER" merge "$RUN/w2-delta-rs" "$WORK/source.parquet"
for copy in sediment delta-rs; do echo "  $copy: $("$PY" "$HELPER" rows "$RUN/w2-$copy")"; done
grep -h "requests" "$WORK/w2-sediment.out" | sed 's/^/  sediment: /'
rm -rf "$WORK"
