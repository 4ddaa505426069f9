#!/usr/bin/env bash
# Scenario 1 of the benchmark issue: maximum requests/s through one proxy
# worker, Portico's data plane against nginx and HAProxy as proxies, same
# upstream (nginx answering 200 from memory), HTTP/1.1 keep-alive, wrk with
# 64 connections. The proxy under test runs on CPU 0; the upstream, the load
# generator and Portico's control plane on CPU 1. Runs interleave
# (A B C A B C ...) and the table shows medians and ratios.
#
# Usage: cargo build --release --bins && tests/bench/compare.sh [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
rounds=${2:-3}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
((${#need[@]})) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/upstream.conf" <<NGINX
worker_processes 1; daemon off; pid $work/upstream.pid; error_log $work/upstream.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18090; keepalive_requests 1000000;
  location / { return 200 "hello from the upstream\n"; } } }
NGINX
cat > "$work/proxy.conf" <<NGINX
worker_processes 1; daemon off; pid $work/proxy.pid; error_log $work/proxy.err;
events { worker_connections 4096; }
http { access_log off;
  upstream up { server 127.0.0.1:18090; keepalive 128; }
  server { listen 127.0.0.1:18091; keepalive_requests 1000000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
cat > "$work/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:18092
  default_backend be
backend be
  server up 127.0.0.1:18090
HAPROXY

taskset -c 1 nginx -p "$work" -c "$work/upstream.conf" &
taskset -c 0 nginx -p "$work" -c "$work/proxy.conf" &
taskset -c 0 haproxy -f "$work/haproxy.cfg" -q &
. tests/bench/portico.sh
start_portico
S=$(say "REGISTER|bench|bench-1|0|{}" | sed 's/^ACK|//')
say "ROUTE_ADD|$S|bench.test|/|http://127.0.0.1:18090|0" >/dev/null
say "CONFIG_APPLY|$S" >/dev/null
for port in 18080 18091 18092; do
  curl -sf -H "Host: bench.test" "http://127.0.0.1:$port/" >/dev/null || { echo "proxy on $port does not answer"; exit 1; }
done

if [ -n "${PROFILE:-}" ]; then
  (taskset -c 1 wrk -t1 -c64 -d12s -H "Host: bench.test" http://127.0.0.1:18080/ > /dev/null &)
  sleep 2
  perf record -F 999 -g -p "$(pgrep -f "portico-dp --control-plane http://127.0.0.1:18182")" -o "$PROFILE" -- sleep 6 > /dev/null 2>&1
  ss -tn state established "( dport = :18090 )" | wc -l > "$PROFILE.upstream-conns"
  sleep 5
  exit 0
fi
declare -A results
for round in $(seq "$rounds"); do
  for target in portico:18080 nginx:18091 haproxy:18092; do
    name=${target%%:*}; port=${target##*:}
    rps=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" -H "Host: bench.test" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
    results[$name]+="$rps "
    echo "round $round $name $rps"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(echo "${results[portico]}" | median); n=$(echo "${results[nginx]}" | median); h=$(echo "${results[haproxy]}" | median)
echo
echo "| proxy (1 worker) | requests/s (median of $rounds) | Portico / it |"
echo "|---|---|---|"
echo "| Portico data plane | $p | 1.00 |"
echo "| nginx | $n | $(awk "BEGIN {printf \"%.2f\", $p/$n}") |"
echo "| HAProxy | $h | $(awk "BEGIN {printf \"%.2f\", $p/$h}") |"
