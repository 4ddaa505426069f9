#!/usr/bin/env bash
# The one command for the benchmarks of docs/BENCHMARKS.md: installs what is
# missing (nginx, HAProxy, wrk from Debian; oha from crates.io), builds the
# release binaries and the bare Pingora reference, runs every scenario and
# writes the results into docs/BENCHMARKS.md. Takes about 20 minutes.
#
# Usage: tests/bench/run.sh           full run, rewrites the results in docs/BENCHMARKS.md
#        tests/bench/run.sh --smoke   seconds-long check that the harness works (debug build, no doc change)
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh wrk:wrk nginx:nginx-light haproxy:haproxy taskset:util-linux
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null 2>&1; then
  echo "bench: installing oha from crates.io (a few minutes, once)" >&2
  cargo install oha --locked --quiet
fi

# Binaries and examples are built apart: built together, the examples'
# dev-dependencies (tokio's test-util, for paused-clock tests) would be
# compiled into the measured binaries and slow every timer.
if [ "${1:-}" = "--smoke" ]; then
  cargo build --quiet --workspace --bins
  cargo build --quiet --workspace --examples
  exec python3 tests/bench/harness.py --smoke --bin target/debug
fi
cargo build --release --quiet --workspace --bins
cargo build --release --quiet --workspace --examples
python3 tests/bench/harness.py --write docs/BENCHMARKS.md
