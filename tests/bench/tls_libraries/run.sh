#!/usr/bin/env bash
# The TLS libraries Pingora can use, side by side (docs/BENCHMARKS.md,
# "Build time and the TLS library"): a cold release build of the same bare
# TLS proxy with each, timed, then bench.py. BoringSSL needs cmake and
# libclang-dev. Usage: tests/bench/tls_libraries/run.sh
set -u
cd "$(dirname "$0")"
for v in openssl-vendored openssl-system boringssl rustls; do
  feat=${v%%-*}
  rm -rf "target-$v"
  case $v in
    openssl-vendored) env=(OPENSSL_NO_VENDOR=0) ;;
    openssl-system) env=(OPENSSL_NO_VENDOR=1) ;;
    *) env=() ;;
  esac
  start=$(date +%s)
  env "${env[@]}" CARGO_TARGET_DIR="target-$v" cargo build --release -q --features "$feat" > "build-$v.log" 2>&1
  rc=$?
  echo "$v: rc=$rc $(( $(date +%s) - start )) s"
done
python3 bench.py
