#!/usr/bin/env python3
"""The benchmark harness of docs/BENCHMARKS.md: Portico's data plane against
nginx, HAProxy and Caddy as one-worker proxies in front of the same upstream,
plus Portico's own propagation (also against Caddy's admin API and nginx's
reload), hitless-change, control-plane and memory figures. Everything runs on
loopback; comparisons interleave (A B C A B C ...) and the tables show
medians. Started by tests/bench/run.sh, which installs the tools.

Usage: python3 tests/bench/harness.py [--smoke] [--bin DIR] [--write FILE] [--only N[,M...]]
       (--only runs the named scenarios and prints their tables, writing nothing)
"""
import argparse, asyncio, datetime, json, os, platform, resource, shutil, subprocess, sys
import tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replicated  # noqa: E402
from benchlib import (ROOT, Conn, Procs, free_port, median, percentile, request, rss_mb,  # noqa: E402
                      start_control_plane, start_data_plane, wait_status)

PROXY_CPU, LOAD_CPU = 0, 1
HOST = "bench.test"
START, END = "<!-- harness:start -->", "<!-- harness:end -->"

FULL = dict(secs=10, rounds=3, many=10_000, prop_routes=10_000, applies=200, planes=(1, 2, 4),
            hitless_secs=60, sessions=1000, pipelined=50_000, memory=(0, 10_000, 100_000), reloads=50,
            fixed_rate=12_000)
SMOKE = dict(secs=1, rounds=1, many=100, prop_routes=100, applies=5, planes=(1, 2),
             hitless_secs=3, sessions=20, pipelined=500, memory=(0, 200, 1000), reloads=3,
             fixed_rate=1_000)
SCENARIOS = [str(n) for n in range(1, 12)]
PROXIES = ["portico", "nginx", "haproxy", "caddy", "pingora", "core", "portico_proxy"]


def pinned(argv, cpu):
    return (["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > cpu else []) + argv


def sh(argv):
    return subprocess.run(argv, capture_output=True, text=True)


class Rig:
    """The upstream, the three comparison proxies and one Portico stack."""

    def __init__(self, procs, work, bindir):
        self.procs, self.work, self.bindir = procs, work, bindir
        self.up = [free_port(), free_port()]
        self.ports = {"nginx": free_port(), "haproxy": free_port(), "pingora": free_port(), "caddy": free_port(),
                      "core": free_port()}
        self.caddy_admin = free_port()
        self.conf("upstream.conf", """
worker_processes 1; daemon off; pid {w}/upstream.pid; error_log {w}/upstream.err;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 10000000;
  server {{ listen 127.0.0.1:{u0}; listen 127.0.0.1:{u1}; location / {{ return 200 "hello from the upstream\\n"; }} }} }}
""")
        self.conf("nginx.conf", """
worker_processes 1; daemon off; pid {w}/nginx.pid; error_log {w}/nginx.err;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 10000000;
  upstream up {{ server 127.0.0.1:{u0}; keepalive 128; }}
  server {{ listen 127.0.0.1:{nginx};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
        self.conf("haproxy.cfg", """
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{haproxy}
  default_backend be
backend be
  server up 127.0.0.1:{u0}
""")
        # Caddy's global options: no certificates (its autosaved config goes to $HOME, in work),
        # its admin API on its own port.
        self.conf("Caddyfile", """
{{
  admin 127.0.0.1:{caddy_admin}
  auto_https off
}}
http://:{caddy} {{
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:{u0}
}}
""")
        self.upstream = "http://127.0.0.1:%d" % self.up[0]
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.start(["nginx", "-p", work, "-c", work + "/upstream.conf"], pin=LOAD_CPU, **quiet)
        # The process of each proxy (nginx's master, whose worker is its child).
        self.pids = {
            "nginx": procs.start(["nginx", "-p", work, "-c", work + "/nginx.conf"], pin=PROXY_CPU, **quiet).pid,
            "haproxy": procs.start(["haproxy", "-f", work + "/haproxy.cfg", "-q"], pin=PROXY_CPU, **quiet).pid,
            "pingora": procs.start([os.path.join(bindir, "examples", "bare_proxy"),
                                    "127.0.0.1:%d" % self.ports["pingora"], "127.0.0.1:%d" % self.up[0]],
                                   pin=PROXY_CPU, **quiet).pid,
            "core": procs.start([os.path.join(bindir, "examples", "bare_core"),
                                 "127.0.0.1:%d" % self.ports["core"], "127.0.0.1:%d" % self.up[0]],
                                pin=PROXY_CPU, **quiet).pid,
        }
        # GOMAXPROCS=1: Go code runs on one OS thread at a time, as the others run one worker.
        self.pids["caddy"] = procs.start(
            ["caddy", "run", "--config", work + "/Caddyfile", "--adapter", "caddyfile"], pin=PROXY_CPU,
            env={**os.environ, "GOMAXPROCS": "1", "HOME": work, "XDG_DATA_HOME": work, "XDG_CONFIG_HOME": work},
            **quiet).pid
        self.stack = Stack(procs, work, bindir, "main")
        self.pids["portico"] = self.stack.dps[0][0].pid
        self.ports["portico"] = self.stack.proxy[1]
        self.route = self.stack.add_routes([HOST], self.upstream)[0]
        # The same Portico with every request on pingora-proxy's path.
        self.proxy_path = Stack(procs, work, bindir, "proxy-path", dp_args=["--fast-path", "off"])
        self.pids["portico_proxy"] = self.proxy_path.dps[0][0].pid
        self.ports["portico_proxy"] = self.proxy_path.proxy[1]
        self.proxy_path.add_routes([HOST], self.upstream)
        for name, port in self.ports.items():
            wait_status(("127.0.0.1", port), HOST, 200)

    def conf(self, name, template):
        with open(os.path.join(self.work, name), "w") as f:
            f.write(template.format(w=self.work, u0=self.up[0], u1=self.up[1], caddy_admin=self.caddy_admin,
                                    **self.ports))

    def url(self, proxy):
        return "http://127.0.0.1:%d/" % self.ports[proxy]


class Stack:
    """A control plane (on the load CPU) and data planes (one worker each)."""

    def __init__(self, procs, work, bindir, name, planes=1, pin_dp=PROXY_CPU, pin_cp=LOAD_CPU, cp_args=(),
                 dp_args=(), threads=1):
        data = tempfile.mkdtemp(prefix="cp-%s-" % name, dir=work)
        self.cp, self.cp_addrs = start_control_plane(procs, bindir, data, pin=pin_cp, extra=cp_args)
        self.dps = [start_data_plane(procs, bindir, self.cp_addrs, "%s-dp-%d" % (name, i), pin=pin_dp,
                                     extra=dp_args, threads=threads)
                    for i in range(planes)]
        self.proxy = self.dps[0][1]["proxy"]
        self.conn = Conn(self.cp_addrs["registry"])
        self.sid = self.conn.register("bench-" + name, name + "-1")
        self.conn.keep_alive(self.sid)
        self.sessions = 0

    def add_routes(self, hosts, backend, per_session=1000):
        """Adds one route per host, applied in sessions of `per_session` routes; returns the ids."""
        ids = []
        for start in range(0, len(hosts), per_session):
            chunk = hosts[start:start + per_session]
            if start == 0 and self.sessions == 0:
                conn, sid = self.conn, self.sid
            else:
                conn = Conn(self.cp_addrs["registry"])
                sid = conn.register("bulk", "bulk-%d" % self.sessions)
                conn.keep_alive(sid)
            self.sessions += 1
            # Bulk lines of 100 routes stay under the protocol's line limit.
            lines = ["ROUTE_ADD_BULK|%s|%s" % (sid, json.dumps(
                [{"domains": [h], "path": "/", "backend_url": backend} for h in chunk[i:i + 100]]))
                for i in range(0, len(chunk), 100)]
            replies = conn.send_many(lines + ["CONFIG_APPLY|" + sid])
            assert replies[-1] == "OK", replies[-1]
            for reply in replies[:-1]:
                assert reply.startswith("ROUTE_BULK_OK|"), reply[:200]
                ids += [item["route_id"] for item in json.loads(reply.split("|", 1)[1])]
        return ids


# --- load generators ---------------------------------------------------------

def wrk(url, secs, host=HOST, script=None):
    argv = ["wrk", "-t1", "-c64", "-d%ds" % secs, "--latency"]
    argv += ["-s", script] if script else ["-H", "Host: " + host]
    out = sh(pinned(argv + [url], LOAD_CPU)).stdout
    rps = errors = 0.0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif line.strip().startswith("Non-2xx"):
            errors += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(w.strip(",")) for w in words[3::2])
    if rps <= 0:
        raise RuntimeError("wrk measured nothing against %s:\n%s" % (url, out))
    return {"rps": rps, "errors": errors}


def oha(url, secs, rate, host=HOST):
    argv = ["oha", "-z", "%ds" % secs, "-q", str(int(rate)), "--latency-correction", "--no-tui",
            "--output-format", "json", "-c", "64", "-H", "Host: " + host, url]
    out = sh(pinned(argv, LOAD_CPU))
    try:
        r = json.loads(out.stdout)
    except ValueError:
        raise RuntimeError("oha failed against %s: %s" % (url, out.stderr[-2000:]))
    codes = {int(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
    # oha cancels the requests still in flight when the run's time is up;
    # those are the load generator's cut-off, not answers of the proxy.
    failed = {k: v for k, v in r.get("errorDistribution", {}).items() if "aborted due to deadline" not in k}
    errors = sum(failed.values()) + sum(v for k, v in codes.items() if not 200 <= k < 300)
    if errors:
        log("  %s: errors %s, status codes %s" % (url, failed, codes))
    pct = r["latencyPercentiles"]
    return {"p50": pct["p50"] * 1000, "p99": pct["p99"] * 1000, "p999": pct["p99.9"] * 1000,
            "rps": r["summary"]["requestsPerSec"], "errors": errors, "requests": sum(codes.values())}


# --- scenarios ---------------------------------------------------------------

def interleaved(rounds, names, run, mirrored=False):
    """Runs run(name) for each name, round after round; returns {name: [results]}.
    mirrored runs every other round backwards (A B B A ...), so a drift over the
    run does not always favour the name that comes first."""
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in (names[::-1] if mirrored and r % 2 else names):
            out[n].append(run(n))
            log("  round %d %s: %s" % (r + 1, n, fmt_result(out[n][-1])))
    return out


def fmt_result(r):
    return ", ".join("%s %.3g" % kv for kv in r.items())


def throughput(rig, p):
    res = interleaved(p["rounds"], PROXIES, lambda n: wrk(rig.url(n), p["secs"]))
    return {n: median([r["rps"] for r in res[n]]) for n in PROXIES}, res


def tail_latency(rig, p, nginx_max):
    """Open-loop loads: a fixed rate under every Pingora-based proxy's
    capacity, then 50 % and 80 % of nginx's maximum. Keyed by the load's label."""
    out = {}
    loads = [("%s req/s" % "{:,}".format(p["fixed_rate"]), p["fixed_rate"])]
    loads += [("%d %% of nginx's max" % (share * 100), nginx_max * share) for share in (0.5, 0.8)]
    for label, rate in loads:
        res = interleaved(p["rounds"], PROXIES[:4], lambda n: oha(rig.url(n), p["secs"], rate))
        out[label] = {"rate": rate, **{n: {k: median([r[k] for r in rs]) for k in rs[0]}
                                       for n, rs in res.items()}}
    return out


def many_routes(procs, work, bindir, p, upstream):
    stacks = {}
    for label, n in (("10 routes", 10), ("%d routes" % p["many"], p["many"])):
        hosts = ["h%d.many.test" % i for i in range(n)]
        stack = Stack(procs, work, bindir, "many%d" % n)
        stack.add_routes(hosts, upstream)
        script = os.path.join(work, "many%d.lua" % n)
        with open(script, "w") as f:
            f.write("local reqs, i = {}, 0\n"
                    "init = function(args)\n  for k = 0, %d do reqs[#reqs + 1] = wrk.format('GET', '/', {Host = 'h' .. k .. '.many.test'}) end\nend\n"
                    "request = function() i = i %% #reqs + 1; return reqs[i] end\n" % (n - 1))
        wait_status(stack.proxy, hosts[-1], 200)
        stacks[label] = (stack, script)
    # A ratio of two figures from the same proxy is noisier than either, so
    # this scenario gets two more rounds.
    res = interleaved(p["rounds"] + 2 * (p["rounds"] > 1), list(stacks), lambda l: wrk(
        "http://%s:%d/" % stacks[l][0].proxy, p["secs"], script=stacks[l][1]))
    return {l: median([r["rps"] for r in rs]) for l, rs in res.items()}, res


def propagation(work, bindir, p, upstream):
    out = {}
    for r in range(p["rounds"]):
        for planes in p["planes"]:
            with Procs() as own:
                stack = Stack(own, work, bindir, "prop%d" % planes, planes=planes, pin_dp=None, pin_cp=None)
                stack.add_routes(["h%d.prop.test" % i for i in range(p["prop_routes"])], upstream)
                conn = Conn(stack.cp_addrs["registry"])
                sid = conn.register("one", "one-1")
                to_ok, to_served = [], []
                for n in range(p["applies"]):
                    host = "p%d.test" % n
                    assert conn.send("ROUTE_ADD|%s|%s|/|%s|0" % (sid, host, upstream)).startswith("ROUTE_OK")
                    t0 = time.perf_counter()
                    assert conn.send("CONFIG_APPLY|" + sid) == "OK"
                    to_ok.append((time.perf_counter() - t0) * 1000)
                    for _, addrs in stack.dps:
                        status = request(addrs["proxy"], host)
                        assert status == 200, "route %s answered %d right after OK" % (host, status)
                    to_served.append((time.perf_counter() - t0) * 1000)
            res = {"ok_p50": median(to_ok), "ok_p99": percentile(to_ok, 0.99),
                   "p50": median(to_served), "p99": percentile(to_served, 0.99)}
            out.setdefault(planes, []).append(res)
            log("  round %d, %d data plane(s): %s" % (r + 1, planes, fmt_result(res)))
    return {k: {m: median([x[m] for x in v]) for m in v[0]} for k, v in out.items()}


def until_served(addr, host, started):
    """Ms from `started` until `host` answers 200, polled every millisecond."""
    wait_status(addr, host, 200, timeout=30, every=0.001)
    return (time.perf_counter() - started) * 1000


def caddy_admin(port, method, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def caddy_route(host, upstream_port):
    return {"match": [{"host": [host]}],
            "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:%d" % upstream_port}]}]}


def nginx_server(host, upstream_port):
    return "server { listen 127.0.0.1:%%d; server_name %s; location / { proxy_pass http://127.0.0.1:%d; } }\n" % (
        host, upstream_port)


def reloads(work, bindir, p, upstream):
    """One-route changes with prop_routes routes loaded: through Caddy's admin
    API (one route inserted first), through nginx (one more server block and
    `nginx -s reload`) and through Portico (ROUTE_ADD + CONFIG_APPLY), each
    timed until the new host answers 200 on a new connection."""
    up_port = int(upstream.rsplit(":", 1)[1])
    hosts = ["h%d.reload.test" % i for i in range(p["prop_routes"])]
    out = {}
    with Procs() as own:
        # Caddy: every route, then a catch-all 404, so a missing host is not Caddy's empty 200.
        admin, port = free_port(), free_port()
        boot = os.path.join(work, "caddy-reload.json")
        with open(boot, "w") as f:
            json.dump({"admin": {"listen": "127.0.0.1:%d" % admin}}, f)
        own.start(["caddy", "run", "--config", boot], pin=PROXY_CPU, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL, env={**os.environ, "GOMAXPROCS": "1", "HOME": work,
                                                  "XDG_DATA_HOME": work, "XDG_CONFIG_HOME": work})
        config = {"admin": {"listen": "127.0.0.1:%d" % admin}, "apps": {"http": {"servers": {"srv0": {
            "listen": ["127.0.0.1:%d" % port], "automatic_https": {"disable": True},
            "routes": [caddy_route(h, up_port) for h in hosts]
            + [{"handle": [{"handler": "static_response", "status_code": 404}]}]}}}}}
        deadline = time.time() + 20
        while True:
            try:
                caddy_admin(admin, "POST", "/load", config)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        wait_status(("127.0.0.1", port), hosts[-1], 200)
        took = []
        for n in range(p["reloads"]):
            host = "c%d.reload.test" % n
            t0 = time.perf_counter()
            caddy_admin(admin, "PUT", "/config/apps/http/servers/srv0/routes/0", caddy_route(host, up_port))
            took.append(until_served(("127.0.0.1", port), host, t0))
        out["caddy"] = took

        # nginx: a server block per host in an included file, a default server answering 404.
        port = free_port()
        blocks = os.path.join(work, "reload-servers.conf")
        with open(blocks, "w") as f:
            f.writelines(nginx_server(h, up_port) % port for h in hosts)
        conf = os.path.join(work, "reload.conf")
        with open(conf, "w") as f:
            f.write("worker_processes 1; daemon off; pid %s/reload.pid; error_log %s/reload.err;\n"
                    "events { worker_connections 1024; }\nhttp { access_log off;\n"
                    "  server_names_hash_max_size 65536; server_names_hash_bucket_size 128;\n"
                    "  server { listen 127.0.0.1:%d default_server; return 404; }\n  include %s; }\n"
                    % (work, work, port, blocks))
        own.start(["nginx", "-p", work, "-c", conf], pin=PROXY_CPU, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
        wait_status(("127.0.0.1", port), hosts[-1], 200)
        took = []
        for n in range(p["reloads"]):
            host = "n%d.reload.test" % n
            t0 = time.perf_counter()
            with open(blocks, "a") as f:
                f.write(nginx_server(host, up_port) % port)
            if sh(["nginx", "-p", work, "-c", conf, "-s", "reload"]).returncode != 0:
                raise RuntimeError("nginx -s reload failed")
            took.append(until_served(("127.0.0.1", port), host, t0))
        out["nginx"] = took

        stack = Stack(own, work, bindir, "reload", pin_dp=PROXY_CPU)
        stack.add_routes(hosts, upstream)
        conn = Conn(stack.cp_addrs["registry"])
        sid = conn.register("one", "one-1")
        took = []
        for n in range(p["reloads"]):
            host = "p%d.reload.test" % n
            t0 = time.perf_counter()
            replies = conn.send_many(["ROUTE_ADD|%s|%s|/|%s|0" % (sid, host, upstream), "CONFIG_APPLY|" + sid])
            assert replies[-1] == "OK", replies
            took.append(until_served(stack.proxy, host, t0))
        out["portico"] = took
    res = {n: {"p50": median(t), "p99": percentile(t, 0.99), "max": max(t)} for n, t in out.items()}
    for n, r in res.items():
        log("  %s: %s" % (n, fmt_result(r)))
    return res


def nginx_proxy(procs, work, name, upstream, workers, pin, listen="", server=""):
    """An nginx of `workers` workers proxying to `upstream` with 128 kept
    connections and unlimited keep-alive requests; returns its port."""
    port = free_port()
    conf = os.path.join(work, name + ".conf")
    with open(conf, "w") as f:
        f.write("""
worker_processes {workers}; daemon off; pid {w}/{name}.pid; error_log {w}/{name}.err;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 10000000;
  upstream up {{ server {up}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} {listen}; {server}
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""".format(workers=workers, w=work, name=name, up=upstream[len("http://"):], port=port, listen=listen,
           server=server))
    procs.start(["nginx", "-p", work, "-c", conf], pin=pin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return port


def https(procs, work, bindir, p, upstream):
    """HTTPS at the edge against nginx, one worker each, the same ECDSA P-256
    certificate: keep-alive throughput over TLS, then new connections (one
    full handshake and one request each, `Connection: close`)."""
    certs = os.path.join(work, "certs")
    os.makedirs(os.path.join(certs, "bench"))
    chain, key = os.path.join(certs, "bench", "fullchain.pem"), os.path.join(certs, "bench", "privkey.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "30", "-subj", "/CN=" + HOST, "-addext", "subjectAltName=DNS:" + HOST,
                    "-keyout", key, "-out", chain], check=True, capture_output=True)
    port = nginx_proxy(procs, work, "nginx-tls", upstream, workers=1, pin=PROXY_CPU,
                       listen="ssl", server="server_name %s; ssl_certificate %s; ssl_certificate_key %s; "
                       "ssl_protocols TLSv1.2 TLSv1.3;" % (HOST, chain, key))
    # wrk sends no SNI to an address, so the data plane's default is the certificate.
    stack = Stack(procs, work, bindir, "tls", cp_args=("--cert-dir", certs),
                  dp_args=("--listen-tls", "127.0.0.1:0", "--default-cert", HOST))
    stack.add_routes([HOST], upstream)
    urls = {"portico": "https://127.0.0.1:%d/" % stack.dps[0][1]["tls"][1], "nginx": "https://127.0.0.1:%d/" % port}
    for url in urls.values():
        deadline = time.time() + 20
        while sh(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: " + HOST, url]).stdout != "200":
            if time.time() > deadline:
                raise RuntimeError("%s never answered 200 over TLS" % url)
            time.sleep(0.1)
    names = ["portico", "nginx"]
    keepalive = interleaved(p["rounds"], names, lambda n: wrk(urls[n], p["secs"]), mirrored=True)
    close = os.path.join(work, "close.lua")
    with open(close, "w") as f:
        f.write('wrk.headers["Host"] = "%s"\nwrk.headers["Connection"] = "close"\n' % HOST)
    handshakes = interleaved(p["rounds"], names, lambda n: wrk(urls[n], p["secs"], script=close), mirrored=True)
    return {kind: {n: median([r["rps"] for r in res[n]]) for n in names}
            for kind, res in (("keep-alive requests/s", keepalive), ("new TLS connections/s", handshakes))}


def hitless(rig, p, rate):
    """Open-loop load while the route's backend flips between two upstream
    ports once a second."""
    results = []
    for r in range(p["rounds"]):
        stop, applies, failures = threading.Event(), [0], []

        def flip():
            conn, i = rig.stack.conn, 0
            while not stop.wait(1.0):
                i += 1
                backend = "http://127.0.0.1:%d" % rig.up[i % 2]
                replies = conn.send_many(["ROUTE_UPDATE|%s|%s|backend_url|%s" % (rig.stack.sid, rig.route, backend),
                                          "CONFIG_APPLY|" + rig.stack.sid])
                if replies != ["ROUTE_OK", "OK"]:
                    failures.append(replies)
                applies[0] += 1

        t = threading.Thread(target=flip)
        t.start()
        try:
            res = oha(rig.url("portico"), p["hitless_secs"], rate)
        finally:
            stop.set()
            t.join()
        if failures:
            raise RuntimeError("applies failed during the hitless run: %s" % failures[:3])
        res["applies"] = applies[0]
        results.append(res)
        log("  round %d: %s" % (r + 1, fmt_result(res)))
    return results


async def _session(addr, i, routes, backend):
    reader, writer = await asyncio.open_connection(*addr)

    async def send(line):
        writer.write((line + "\n").encode())
        return (await reader.readline()).decode().rstrip("\n")
    sid = (await send("REGISTER|cpbench|cp-%d|0|{}" % i)).split("|", 1)[1]
    for k in range(routes):
        reply = await send("ROUTE_ADD|%s|s%d-r%d.cp.test|/|%s|0" % (sid, i, k, backend))
        assert reply.startswith("ROUTE_OK"), reply
    assert await send("CONFIG_APPLY|" + sid) == "OK"
    writer.close()


async def _sessions(addr, n, backend):
    await asyncio.gather(*[_session(addr, i, 10, backend) for i in range(n)])


def pipelined(conn, sid, n, backend):
    lines = "".join("ROUTE_ADD|%s|q%d.pipe.test|/|%s|0\n" % (sid, i, backend) for i in range(n))
    with conn.lock:
        t0 = time.perf_counter()
        writer = threading.Thread(target=lambda: (conn.f.write(lines), conn.f.flush()))
        writer.start()
        for _ in range(n):
            reply = conn.f.readline()
            assert reply.startswith("ROUTE_OK"), reply
        writer.join()
        return n / (time.perf_counter() - t0)


def control_plane(work, bindir, p, upstream):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    out = []
    for r in range(p["rounds"]):
        with Procs() as own:
            # The sessions all come from 127.0.0.1, and the pipelined adds all
            # go to one session: both beyond the control plane's default limits.
            stack = Stack(own, work, bindir, "cp%d" % r, pin_dp=None, pin_cp=None,
                          cp_args=["--max-connections-per-ip", str(p["sessions"] + 10),
                                   "--max-routes-per-session", str(p["pipelined"] + 1)])
            t0 = time.perf_counter()
            asyncio.run(_sessions(stack.cp_addrs["registry"], p["sessions"], upstream))
            total = time.perf_counter() - t0
            rate = pipelined(stack.conn, stack.sid, p["pipelined"], upstream)
        out.append({"sessions_s": total, "pipelined_per_s": rate})
        log("  round %d: %s" % (r + 1, fmt_result(out[-1])))
    return {k: median([x[k] for x in out]) for k in out[0]}


def memory(work, bindir, p, upstream):
    out = []
    for r in range(p["rounds"]):
        with Procs() as own:
            stack = Stack(own, work, bindir, "mem%d" % r, pin_dp=None, pin_cp=None)
            row, loaded = {}, 0
            for n in p["memory"]:
                stack.add_routes(["m%d.mem.test" % i for i in range(loaded, n)], upstream, per_session=100)
                loaded = n
                # Both planes settle: the data plane hands back what the pushes freed
                # once they stop for a second (sync.rs).
                time.sleep(1.5)
                row[n] = (rss_mb(stack.cp.pid), rss_mb(stack.dps[0][0].pid))
            out.append(row)
            log("  round %d: %s" % (r + 1, row))
    return {n: tuple(median([row[n][i] for row in out]) for i in (0, 1)) for n in p["memory"]}


# --- report ------------------------------------------------------------------

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // (1024 * 1024) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    versions = {
        "nginx": sh(["nginx", "-v"]).stderr.strip().split("/")[-1],
        "HAProxy": sh(["haproxy", "-v"]).stdout.split()[2],
        "wrk": sh(["wrk", "-v"]).stdout.split()[1],
        "oha": sh(["oha", "--version"]).stdout.split()[-1],
    }
    return "%d cores (%s), %d GB, Linux %s; %s" % (
        os.cpu_count(), model, mem, platform.release(), ", ".join("%s %s" % kv for kv in versions.items()))


def ratio(a, b):
    return a / b if b else float("nan")


def verdict(ok):
    return "met" if ok else "**missed**"


def report(p, res, smoke):
    """The markdown of the scenarios in `res` ({number: result}), with the
    targets table when every scenario ran."""
    L = []
    L.append("Measured %s by `tests/bench/run.sh`%s; machine: %s." % (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        " --smoke (a check of the harness, not figures)" if smoke else "", machine()))
    L.append("")
    L.append("Set-up: one worker each (`portico-dp --threads 1`, nginx `worker_processes 1`, HAProxy "
             "`nbthread 1`, Caddy with `GOMAXPROCS=1`, the two bare Pingora references with one thread). "
             "Every proxy runs on CPU %d; the upstream (nginx answering 200 from memory), the load generator "
             "and Portico's control plane on CPU %d. HTTP/1.1 keep-alive, 64 connections; nginx keeps 128 idle "
             "upstream connections and has no access log; HAProxy uses `http-reuse always`; Caddy has no "
             "access log (its default). Each figure is the median of %d interleaved runs of %d s." % (
                 PROXY_CPU, LOAD_CPU, p["rounds"], p["secs"]))
    L.append("")
    labels = {"portico": "Portico data plane", "nginx": "nginx", "haproxy": "HAProxy", "caddy": "Caddy",
              "pingora": "bare Pingora (`pingora-proxy`, reference)",
              "core": "bare pingora-core forwarding (reference)",
              "portico_proxy": "Portico, fast path off (`--fast-path off`)"}
    if "1" in res:
        thr = res["1"][0]
        L.append("### 1. Proxy throughput (wrk `-t1 -c64`)\n")
        L.append("| proxy | requests/s | Portico / it |\n|---|---|---|")
        for n in PROXIES:
            L.append("| %s | %s | %.2f |" % (labels[n], "{:,.0f}".format(thr[n]), ratio(thr["portico"], thr[n])))
    if "2" in res:
        L.append("\n### 2. Tail latency (oha `-q RATE --latency-correction -c 64`, open loop)\n")
        L.append("| load | proxy | achieved req/s | p50 ms | p99 ms | p99.9 ms | errors or non-2xx |\n"
                 "|---|---|---|---|---|---|---|")
        for label, row in res["2"].items():
            load = label if label.endswith("req/s") else "%s (%s req/s)" % (label, "{:,.0f}".format(row["rate"]))
            for n in PROXIES[:4]:
                r = row[n]
                L.append("| %s | %s | %s | %.2f | %.2f | %.2f | %d |" % (
                    load, n, "{:,.0f}".format(r["rps"]), r["p50"], r["p99"], r["p999"], r["errors"]))
    if "3" in res:
        L.append("\n### 3. Many routes (wrk, requests spread round-robin over every host; median of %d runs)\n"
                 % (p["rounds"] + 2 * (p["rounds"] > 1)))
        L.append("| Portico with | requests/s | against 10 routes |\n|---|---|---|")
        base = res["3"][0]["10 routes"]
        for label, v in res["3"][0].items():
            L.append("| %s | %s | %.2f |" % (label, "{:,.0f}".format(v), ratio(v, base)))
    if "4" in res:
        L.append("\n### 4. Propagation (%s routes loaded, %d applies of a one-route change)\n" % (
            "{:,}".format(p["prop_routes"]), p["applies"]))
        L.append("From sending `CONFIG_APPLY` to the new route answering 200 on every data plane, and, in "
                 "brackets, to the `OK` (which comes after every data plane acknowledged).\n")
        L.append("| data planes | median ms | p99 ms |\n|---|---|---|")
        for planes, r in res["4"].items():
            L.append("| %d | %.2f (%.2f) | %.2f (%.2f) |" % (planes, r["p50"], r["ok_p50"], r["p99"], r["ok_p99"]))
    if "5" in res:
        L.append("\n### 5. Hitless change (%d s of open-loop load at 50 %% of Portico's max; the route's backend "
                 "changes with one apply per second)\n" % p["hitless_secs"])
        L.append("| run | requests | applies | failed or non-2xx | p99 ms |\n|---|---|---|---|---|")
        for i, r in enumerate(res["5"]):
            L.append("| %d | %s | %d | %d | %.2f |" % (i + 1, "{:,}".format(r["requests"]), r["applies"],
                                                      r["errors"], r["p99"]))
    if "6" in res:
        s6 = res["6"]
        L.append("\n### 6. Control plane\n")
        L.append("| | figure |\n|---|---|")
        L.append("| %s sessions, each REGISTER + 10 × ROUTE_ADD + CONFIG_APPLY, concurrently | %.2f s |" % (
            "{:,}".format(p["sessions"]), s6["sessions_s"]))
        L.append("| pipelined `ROUTE_ADD` on one connection (%s commands) | %s commands/s |" % (
            "{:,}".format(p["pipelined"]), "{:,.0f}".format(s6["pipelined_per_s"])))
    if "7" in res:
        s7 = res["7"]
        L.append("\n### 7. Memory (resident set after loading, one data plane)\n")
        L.append("| routes | control plane MB | data plane MB |\n|---|---|---|")
        for n, (cp, dp) in s7.items():
            L.append("| %s | %.1f | %.1f |" % ("{:,}".format(n), cp, dp))
        top = max(p["memory"])
        per = tuple((s7[top][i] - s7[0][i]) / (top / 1000) for i in (0, 1))
        L.append("| MB per 1,000 routes (from 0 to %s) | %.2f | %.2f |" % ("{:,}".format(top), per[0], per[1]))
    if "8" in res:
        L.append("\n### 8. A one-route change against Caddy and nginx (%s routes loaded, %d changes each)\n" % (
            "{:,}".format(p["prop_routes"]), p["reloads"]))
        L.append("From the change to the new host answering 200 on a new connection: Caddy through its admin "
                 "API (`PUT …/routes/0`, one route), nginx by one more server block and `nginx -s reload`, "
                 "Portico by `ROUTE_ADD` + `CONFIG_APPLY` (one data plane).\n")
        L.append("| proxy | median ms | p99 ms | max ms |\n|---|---|---|---|")
        for n in ("portico", "caddy", "nginx"):
            r = res["8"][n]
            L.append("| %s | %.1f | %.1f | %.1f |" % (labels[n], r["p50"], r["p99"], r["max"]))

    if "9" in res:
        L.append("\n### 9. HTTPS at the edge (wrk `-t1 -c64` over TLS; the same ECDSA P-256 certificate)\n")
        L.append("Keep-alive requests over TLS 1.3, then new connections, each a full handshake "
                 "(wrk resumes no session) and one request with `Connection: close`.\n")
        L.append("| | Portico | nginx | Portico / nginx |\n|---|---|---|---|")
        for kind, r in res["9"].items():
            L.append("| %s | %s | %s | %.2f |" % (kind, "{:,.0f}".format(r["portico"]), "{:,.0f}".format(r["nginx"]),
                                                ratio(r["portico"], r["nginx"])))

    if "10" in res:
        L.append("\n### 10. The control plane on etcd: three replicas against one control plane on the embedded "
                 "store (4 data planes spread over the replicas, %s routes loaded)\n" % "{:,}".format(p["prop_routes"]))
        L.append("Apply round trip: REGISTER + ROUTE_ADD + CONFIG_APPLY on a new connection (%d rounds). "
                 "Propagation: from `CONFIG_APPLY` to the new route answering 200 on every data plane (%d applies; "
                 "the `OK` waits for every data plane, whichever replica holds it). Sessions: %s sessions of "
                 "REGISTER + 10 × ROUTE_ADD + CONFIG_APPLY at once, spread over the replicas.\n" % (
                     p["applies"], p["applies"], "{:,}".format(p["sessions"])))
        L.append("| store | apply round trip median / p99 ms | propagation median / p99 ms | sessions s |\n"
                 "|---|---|---|---|")
        for store, r in res["10"].items():
            L.append("| %s | %.2f / %.2f | %.2f / %.2f | %.2f |" % (
                store, r["round_p50"], r["round_p99"], r["prop_p50"], r["prop_p99"], r["sessions_s"]))

    if "11" in res:
        r = res["11"]
        L.append("\n### 11. Two workers (`portico-dp --threads 2`, nginx `worker_processes 2`)\n")
        L.append("Both proxies may run on either CPU; with no third core, wrk (`-t1 -c64`) and the upstream "
                 "stay on CPU 1 and take part of it, so this shows how each shares a busy machine rather "
                 "than twice scenario 1.\n")
        L.append("| proxy | requests/s | Portico / it |\n|---|---|---|")
        for n in ("portico", "nginx"):
            L.append("| %s | %s | %.2f |" % (labels[n], "{:,.0f}".format(r[n]), ratio(r["portico"], r[n])))

    if smoke or set(res) != set(SCENARIOS):
        return "\n".join(L) + "\n"
    thr, s2, s3, s4, s5, s6 = res["1"][0], res["2"], res["3"], res["4"], res["5"], res["6"]
    fixed, half = s2["%s req/s" % "{:,}".format(p["fixed_rate"])], s2["50 % of nginx's max"]
    fixed_p99 = ratio(fixed["portico"]["p99"], fixed["nginx"]["p99"])
    half_p99 = ratio(half["portico"]["p99"], half["nginx"]["p99"])
    base = s3[0]["10 routes"]
    top = max(p["memory"])
    per = tuple((res["7"][top][i] - res["7"][0][i]) / (top / 1000) for i in (0, 1))
    L.append("\n### Targets\n")
    L.append("| scenario | target | measured | |\n|---|---|---|---|")
    rows = [
        ("1 throughput", "≥ 0.75× nginx and HAProxy, ≥ 2× Caddy", "%.2f× nginx, %.2f× HAProxy, %.2f× Caddy" % (
            ratio(thr["portico"], thr["nginx"]), ratio(thr["portico"], thr["haproxy"]),
            ratio(thr["portico"], thr["caddy"])),
         min(ratio(thr["portico"], thr["nginx"]), ratio(thr["portico"], thr["haproxy"])) >= 0.75
         and ratio(thr["portico"], thr["caddy"]) >= 2),
        ("2 p99 at %s req/s" % "{:,}".format(p["fixed_rate"]), "≤ 2× nginx", "%.2f×" % fixed_p99,
         fixed_p99 <= 2),
        ("2 p99 at 50 % of nginx's max", "≤ 2× nginx", "%.2f×" % half_p99, half_p99 <= 2),
        ("3 many routes", "≥ 0.95× 10 routes", "%.2f×" % ratio(s3[0]["%d routes" % p["many"]], base),
         ratio(s3[0]["%d routes" % p["many"]], base) >= 0.95),
        ("4 propagation, %d data planes" % max(p["planes"]), "p99 ≤ 20 ms", "%.2f ms" % s4[max(p["planes"])]["p99"],
         s4[max(p["planes"])]["p99"] <= 20),
        ("5 hitless", "0 failed requests", "%d" % sum(r["errors"] for r in s5), sum(r["errors"] for r in s5) == 0),
        ("6 control plane", "1,000 × 10 in ≤ 5 s; ≥ 50,000 commands/s", "%.2f s; %s/s" % (
            s6["sessions_s"], "{:,.0f}".format(s6["pipelined_per_s"])),
         s6["sessions_s"] <= 5 and s6["pipelined_per_s"] >= 50_000),
        ("7 memory", "≤ 2 MB per 1,000 routes each", "%.2f MB control plane, %.2f MB data plane" % per,
         max(per) <= 2),
    ] + [("9 HTTPS, %s" % kind, "≥ 0.9× nginx", "%.2f×" % ratio(r["portico"], r["nginx"]),
          ratio(r["portico"], r["nginx"]) >= 0.9) for kind, r in res["9"].items()] + [
        ("10 propagation on etcd, 4 data planes", "p99 ≤ 30 ms", "%.2f ms" % res["10"]["etcd"]["prop_p99"],
         res["10"]["etcd"]["prop_p99"] <= 30)]
    for name, target, measured, ok in rows:
        L.append("| %s | %s | %s | %s |" % (name, target, measured, verdict(ok)))
    return "\n".join(L) + "\n"


def two_workers(procs, work, bindir, p, upstream):
    """Two workers each: Portico (`--threads 2`) against nginx (`worker_processes 2`),
    both free to run on either CPU. This machine has no third core for the load:
    wrk and the upstream stay pinned to CPU 1 and share it with the proxies."""
    port = nginx_proxy(procs, work, "nginx-two", upstream, workers=2, pin=None)
    stack = Stack(procs, work, bindir, "two", pin_dp=None, threads=2)
    stack.add_routes([HOST], upstream)
    ports = {"portico": stack.proxy[1], "nginx": port}
    urls = {n: "http://127.0.0.1:%d/" % port for n, port in ports.items()}
    for port in ports.values():
        wait_status(("127.0.0.1", port), HOST, 200)
    res = interleaved(p["rounds"], list(urls), lambda n: wrk(urls[n], p["secs"]))
    return {n: median([r["rps"] for r in res[n]]) for n in urls}


def write_doc(path, body):
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n%s\n%s\n" % (START, END)
    if START not in text:
        text += "\n%s\n%s\n" % (START, END)
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(head + START + "\n" + body + END + tail)


def nginx_max(rig, p, res):
    """nginx's throughput, from scenario 1 or from one short run."""
    if "1" in res:
        return res["1"][0]["nginx"]
    return wrk(rig.url("nginx"), p["secs"])["rps"]


def run(wanted, work, bindir, p):
    """Runs the wanted scenarios (numbers as strings) in order; returns {number: result}."""
    res = {}
    with Procs() as procs:
        rig = Rig(procs, work, bindir)
        up = rig.upstream
        steps = [
            ("1", "throughput", lambda: throughput(rig, p)),
            ("2", "tail latency", lambda: tail_latency(rig, p, nginx_max(rig, p, res))),
            ("3", "many routes", lambda: many_routes(procs, work, bindir, p, up)),
            ("4", "propagation", lambda: propagation(work, bindir, p, up)),
            ("5", "hitless change", lambda: hitless(rig, p, 0.5 * (
                res["1"][0]["portico"] if "1" in res else wrk(rig.url("portico"), p["secs"])["rps"]))),
            ("6", "control plane", lambda: control_plane(work, bindir, p, up)),
            ("7", "memory", lambda: memory(work, bindir, p, up)),
            ("8", "a one-route change against Caddy and nginx", lambda: reloads(work, bindir, p, up)),
            ("9", "HTTPS at the edge", lambda: https(procs, work, bindir, p, up)),
            ("10", "the control plane on etcd (3 replicas) against the embedded store",
             lambda: replicated.run(Procs, work, bindir, p, up, log)),
            ("11", "two workers", lambda: two_workers(procs, work, bindir, p, up)),
        ]
        for n, name, step in steps:
            if n in wanted:
                log("%s. %s" % (n, name))
                res[n] = step()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="seconds-long pass that checks the harness works")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"), help="directory of the binaries")
    ap.add_argument("--write", help="markdown file whose harness section gets the results (full runs only)")
    ap.add_argument("--only", help="comma-separated scenario numbers (1-10); prints their tables, writes nothing")
    args = ap.parse_args()
    p = SMOKE if args.smoke else FULL
    wanted = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in wanted if n not in SCENARIOS]
    if unknown:
        ap.error("no scenario %s (there are 1 to %d)" % (", ".join(unknown), len(SCENARIOS)))
    work = tempfile.mkdtemp(prefix="portico-bench-")
    try:
        body = report(p, run(wanted, work, args.bin, p), args.smoke)
        print(body)
        if args.write and not args.only:
            write_doc(args.write, body)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
