#!/usr/bin/env bash
# The one test command: lint, then every test against a real S3-compatible server.
#
# Installs (once) a Python venv with moto 5.2.5 (the S3 server) and the deltalake and
# pyarrow wheels (an independent Delta reader), starts the server on 127.0.0.1 behind
# a lock, runs rustfmt, clippy and the tests with cargo-nextest, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
source scripts/s3-env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc examples"
cargo test --doc --workspace --locked
echo "== build the CLI and the examples"
cargo build --locked --bin sediment --examples
export SEDIMENT_BIN="$CARGO_TARGET_DIR/debug/sediment"
echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
