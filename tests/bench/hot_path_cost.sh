#!/usr/bin/env bash
# Requests per second through one data plane (1 worker thread, pinned to CPU
# 0) for a route with no settings and for a route with every setting the hot
# path enforces (headers, options, health check, breaker, rate limit, drain).
# Upstream: nginx answering 200 from memory; load: wrk, 64 connections; both
# pinned to CPU 1. Compares Portico with itself only.
#
# Usage: cargo build --release --bins && tests/bench/hot_path_cost.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v nginx >/dev/null || apt-get install -y -qq nginx-light >/dev/null
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; nginx -p "$work" -c nginx.conf -s stop 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:18090; location / { return 200 "hello from the upstream\n"; } }
}
NGINX
taskset -c 1 nginx -p "$work" -c nginx.conf &
. tests/bench/portico.sh
start_portico
S=$(say "REGISTER|bench|bench-1|0|{}" | sed 's/^ACK|//')
plain=$(say "ROUTE_ADD|$S|plain.test|/|http://127.0.0.1:18090|0" | sed 's/^ROUTE_OK|//')
full=$(say "ROUTE_ADD|$S|full.test|/|http://127.0.0.1:18090|0" | sed 's/^ROUTE_OK|//')
say "HEADERS_SET|$S|$full|X-Frame-Options|DENY" >/dev/null
say "HEADERS_SET|$S|$full|Cache-Control|no-store" >/dev/null
say "OPTIONS_SET|$S|$full|timeout|30s" >/dev/null
say "OPTIONS_SET|$S|$full|connect_timeout|2s" >/dev/null
say "OPTIONS_SET|$S|$full|retries|1" >/dev/null
say "OPTIONS_SET|$S|$full|compression|true" >/dev/null
say "HEALTH_SET|$S|$full|/|10s|2s" >/dev/null
say "CIRCUIT_BREAKER_SET|$S|$full|5|30s|3" >/dev/null
say "RATELIMIT_SET|$S|$full|1000000000|1m" >/dev/null
say "CONFIG_APPLY|$S"
say "DRAIN_START|$S|1h" >/dev/null

for host in plain.test full.test plain.test full.test; do
  out=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" -H "Host: $host" http://127.0.0.1:18080/)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  errors=$(echo "$out" | awk '/Socket errors/')
  echo "$host $rps requests/s, non-2xx: ${bad:-0} $errors"
done
curl -s -H "Host: full.test" http://127.0.0.1:18080/ | head -2
grep -i "health changed\|circuit" "$work/dp.log" | tail -3
