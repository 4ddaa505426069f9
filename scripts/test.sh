#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests and the
# end-to-end tests that start the real binaries. Each step's time is
# printed as it ends, and all of them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
times=()
step() {
  local name=$1 started=$SECONDS
  shift
  "$@"
  times+=("$(printf '%5d s  %s' $((SECONDS - started)) "$name")")
  echo "test.sh: ${times[-1]}" >&2
}
step setup ./scripts/setup.sh --tests
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --quiet -- -D warnings
step deploy ./scripts/check-deploy.sh
step build cargo build --workspace --bins
# The end-to-end tests start real processes; four at a time keeps two cores
# from starving them into timeouts.
step tests env RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" cargo test --workspace
# The benchmark harness as a seconds-long smoke pass: it must run, and its
# figures are not checked.
step bench-smoke tests/bench/run.sh --smoke
# Every fuzz target, 20 s each on the checked-in corpus (docs/SECURITY.md),
# unless the code they cover is what the last passing run fuzzed.
step fuzz env FUZZ_IF_CHANGED=1 ./scripts/fuzz.sh 20
printf 'test.sh: where the time went\n' >&2
printf '  %s\n' "${times[@]}" "$(printf '%5d s  total' "$SECONDS")" >&2
