#!/usr/bin/env bash
# Installs what building and running Portico need on a fresh Debian machine:
# a C toolchain, cmake, protoc and the system's OpenSSL for Pingora, nc,
# curl and openssl. With --tests, also the tests' tools (pebble-challtestsrv
# as a mock DNS server, pebble as an ACME CA, promtool, etcd, chromium).
# Safe to run again. Extra arguments COMMAND:PACKAGE install PACKAGE when
# COMMAND is missing (the bench harness uses this for its tools).
set -euo pipefail

need=()
tests=0
for extra in "$@"; do
  if [ "$extra" = --tests ]; then
    tests=1
    continue
  fi
  command -v "${extra%%:*}" >/dev/null 2>&1 || need+=("${extra#*:}")
done
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v c++ >/dev/null 2>&1 || need+=(g++)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# protoc builds etcd's client.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "$tests" = 1 ]; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  # The DNS tests' mock DNS server and the ACME tests' CA (pebble), and
  # promtool to check /metrics.
  command -v pebble-challtestsrv >/dev/null 2>&1 && command -v pebble >/dev/null 2>&1 || need+=(pebble)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  # etcd for the etcd store's tests.
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  # The dashboard test renders the page in a real browser.
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi

if ((${#need[@]})); then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
}

# The GeoIP tests write MaxMind DB files with PyPI's mmdb-writer, in a venv
# of the tests' own (target/tests-venv).
if [ "$tests" = 1 ]; then
  venv="$(dirname "$0")/../target/tests-venv"
  if ! "$venv/bin/python" -c 'import mmdb_writer' >/dev/null 2>&1; then
    echo "setup: installing mmdb-writer into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check mmdb-writer==0.2.7 netaddr==1.3.0
  fi
fi
