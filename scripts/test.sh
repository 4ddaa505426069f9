#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests and the
# end-to-end tests that start the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --tests
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
./scripts/check-deploy.sh
cargo build --workspace --bins
# The end-to-end tests start real processes; four at a time keeps two cores
# from starving them into timeouts.
RUST_TEST_THREADS=${RUST_TEST_THREADS:-4} cargo test --workspace
# The benchmark harness as a seconds-long smoke pass: it must run, and its
# figures are not checked.
tests/bench/run.sh --smoke
# Every fuzz target, 20 s each on the checked-in corpus (docs/SECURITY.md),
# unless the code they cover is what the last passing run fuzzed.
FUZZ_IF_CHANGED=1 ./scripts/fuzz.sh 20
