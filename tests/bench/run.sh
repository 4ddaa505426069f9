#!/usr/bin/env bash
# The one command for the benchmarks of docs/BENCHMARKS.md: installs what is
# missing (nginx, HAProxy, Caddy, wrk from Debian; oha from crates.io), builds
# the release binaries and the bare Pingora reference, runs every scenario and
# writes the results into docs/BENCHMARKS.md. Takes about 25 minutes.
#
# Usage: tests/bench/run.sh                 full run, rewrites the results in docs/BENCHMARKS.md
#        tests/bench/run.sh --only 1,3      only the named scenarios, printed (no doc change)
#        tests/bench/run.sh --smoke [--only N,M]
#                                           seconds-long check that the harness works (debug build, no doc change)
set -euo pipefail
cd "$(dirname "$0")/../.."
smoke=() only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=(--smoke) ;;
    --only) only=(--only "${2:?--only needs scenario numbers, e.g. 1,3}"); shift ;;
    *) echo "usage: tests/bench/run.sh [--smoke] [--only N[,M...]]" >&2; exit 2 ;;
  esac
  shift
done
./scripts/setup.sh wrk:wrk nginx:nginx-light haproxy:haproxy caddy:caddy taskset:util-linux etcd:etcd-server
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null 2>&1; then
  echo "bench: installing oha from crates.io (a few minutes, once)" >&2
  cargo install oha --locked --quiet
fi

# Binaries and examples are built apart: built together, the examples'
# dev-dependencies (tokio's test-util, for paused-clock tests) would be
# compiled into the measured binaries and slow every timer.
if [ ${#smoke[@]} -gt 0 ]; then
  cargo build --quiet --workspace --bins
  cargo build --quiet --workspace --examples
  exec python3 tests/bench/harness.py --smoke --bin target/debug "${only[@]}"
fi
cargo build --release --quiet --workspace --bins
cargo build --release --quiet --workspace --examples
if [ ${#only[@]} -gt 0 ]; then
  exec python3 tests/bench/harness.py "${only[@]}"
fi
python3 tests/bench/harness.py --write docs/BENCHMARKS.md
