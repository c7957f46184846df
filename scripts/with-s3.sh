#!/usr/bin/env bash
# Run one command with the S3 test server up, e.g.
#   bash scripts/with-s3.sh cargo nextest run -p sediment-integration-tests compaction
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
source scripts/s3-env.sh
source scripts/pg-env.sh
export SEDIMENT_BIN="$CARGO_TARGET_DIR/debug/sediment"
"$@"
