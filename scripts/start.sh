#!/usr/bin/env bash
# Builds Portico and runs a control plane plus one data plane on loopback
# with the default ports until Ctrl-C. Registry 127.0.0.1:8181, proxy
# 127.0.0.1:8080 (HTTP) and 127.0.0.1:8443 (HTTPS), gRPC 127.0.0.1:8182,
# admin 127.0.0.1:8183 (cp) and :8184 (dp). HTTPS serves the pairs in
# ./portico-data/certs; a self-signed one for localhost is made on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bins
certs=./portico-data/certs
if [ ! -e "$certs/localhost/fullchain.pem" ]; then
  mkdir -p "$certs/localhost"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$certs/localhost/privkey.pem" -out "$certs/localhost/fullchain.pem" 2>/dev/null
  chmod 600 "$certs/localhost/privkey.pem"
fi
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
./target/release/portico-cp --cert-dir "$certs" "$@" &
./target/release/portico-dp --listen-tls 127.0.0.1:8443 --default-cert localhost &
wait -n
