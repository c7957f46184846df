#!/usr/bin/env bash
# The one test command: lint, then every test against a real S3-compatible server.
#
# Installs (once) a Python venv with moto 5.2.5 (the S3 server) and the deltalake and
# pyarrow wheels (an independent Delta reader), starts the server on 127.0.0.1 behind
# a lock, runs rustfmt, the Terraform module's checks (scripts/terraform-test.sh),
# clippy and the tests with cargo-nextest, and stops the server.
#
# One build serves everything: the workspace's `target/` (the one `cargo run` uses,
# unless CARGO_TARGET_DIR says otherwise), and clippy runs as the compiler of the
# workspace's own crates during the test build (RUSTC_WORKSPACE_WRAPPER, as
# `cargo clippy` itself does), so dependencies are compiled once, not once for
# `cargo clippy` (check mode) and once more for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
source scripts/s3-env.sh
source scripts/pg-env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== build every target with clippy's lints (warnings denied)"
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
# The argument list `cargo clippy -- -D warnings` hands its driver.
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo build --workspace --all-targets --locked
echo "== doc examples"
cargo test --doc --workspace --locked
export SEDIMENT_BIN="$CARGO_TARGET_DIR/debug/sediment"
bash scripts/terraform-test.sh
echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
