#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests and the
# end-to-end tests that start the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
./scripts/check-deploy.sh
cargo build --workspace --bins
cargo test --workspace
