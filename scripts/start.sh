#!/usr/bin/env bash
# Builds Portico and runs a control plane plus one data plane on loopback
# with the default ports until Ctrl-C. Registry 127.0.0.1:8181, proxy
# 127.0.0.1:8080, gRPC 127.0.0.1:8182, admin 127.0.0.1:8183 (cp) and :8184 (dp).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bins
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
./target/release/portico-cp "$@" &
./target/release/portico-dp &
wait -n
