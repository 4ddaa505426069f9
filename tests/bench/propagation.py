#!/usr/bin/env python3
"""Propagation with 10,000 routes loaded and 1, 2 and 4 data planes (release
build, loopback): for a one-route change, the time from sending CONFIG_APPLY
to its OK (every connected data plane has acknowledged by then), median and
p99 over N applies; after each OK the route is checked on every data plane.
Compares Portico with itself only.

Usage: cargo build --release --bins && python3 tests/bench/propagation.py [applies]
"""
import json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.path.join(ROOT, "target", "release")


def spawn(name, args):
    p = subprocess.Popen([os.path.join(REL, name)] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env={**os.environ, "RUST_LOG": "warn,portico_cp=info,portico_dp=info"})
    addrs = {}
    while len(addrs) < (3 if name == "portico-cp" else 2):
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(name + " exited")
        m = re.search(r'listening listener="(\w+)" addr=(\S+)', line)
        if m:
            host, port = m.group(2).rsplit(":", 1)
            addrs[m.group(1)] = (host, int(port))
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, addrs


def get(addr, host, path="/"):
    s = socket.create_connection(addr, timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def run(planes, applies):
    data = tempfile.mkdtemp(prefix="portico-prop-")
    procs = []
    try:
        cp, cpa = spawn("portico-cp", ["--registry-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                                       "--admin-listen", "127.0.0.1:0", "--data-dir", data])
        procs.append(cp)
        dps = []
        for i in range(planes):
            dp, a = spawn("portico-dp", ["--control-plane", "http://%s:%d" % cpa["grpc"], "--listen", "127.0.0.1:0",
                                         "--admin-listen", "127.0.0.1:0", "--node-id", "dp-%d" % i, "--threads", "1"])
            procs.append(dp)
            dps.append(a)
        for a in dps:
            while True:
                try:
                    if get(a["admin"], "x", "/ready") == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.05)
        c = socket.create_connection(cpa["registry"]); f = c.makefile("rw", newline="\n")
        def send(line):
            f.write(line + "\n"); f.flush(); return f.readline().rstrip("\n")
        big = send("REGISTER|load|load-1|0|{}").split("|", 1)[1]
        for b in range(200):
            items = [{"domains": ["h%d-%d.load.test" % (b, i)], "path": "/", "backend_url": "http://127.0.0.1:9"} for i in range(50)]
            assert send("ROUTE_ADD_BULK|%s|%s" % (big, json.dumps(items))).startswith("ROUTE_BULK_OK")
        assert send("CONFIG_APPLY|%s" % big) == "OK"
        sess = send("REGISTER|one|one-1|0|{}").split("|", 1)[1]
        times = []
        for n in range(applies):
            send("ROUTE_ADD|%s|p%d.test|/|http://127.0.0.1:9|0" % (sess, n))
            t0 = time.perf_counter()
            assert send("CONFIG_APPLY|%s" % sess) == "OK"
            times.append((time.perf_counter() - t0) * 1000)
            for a in dps:
                status = get(a["proxy"], "p%d.test" % n)
                assert status in (502, 503), status  # routed (no backend on :9), not 404
        times.sort()
        return statistics.median(times), times[int(len(times) * 0.99) - 1]
    finally:
        for p in procs:
            p.kill(); p.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    applies = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for planes in (1, 2, 4):
        med, p99 = run(planes, applies)
        print("%d data plane(s), 10,000 routes: CONFIG_APPLY to OK median %.2f ms, p99 %.2f ms over %d applies"
              % (planes, med, p99, applies))
