#!/usr/bin/env python3
"""What an open dashboard costs the control plane: 10,000 routes, every one
with traffic (wrk spreads requests round-robin over all hosts, so every
route is in each tick), the control plane's CPU per second measured over
SECS without a dashboard and with one (the live stream read as a browser
would, plus the 10 s series refresh the page makes), rounds alternating.

Usage: cargo build --release --bins && python3 tests/bench/dashboard_stream.py [secs] [rounds] [routes]
"""
import os, socket, subprocess, sys, tempfile, shutil, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, Procs, median, proc_counters, upstream, wait_status  # noqa: E402
from harness import LOAD_CPU, Stack, pinned  # noqa: E402


def cpu(pid):
    _, _, user, system = proc_counters(pid)
    return user + system


def dashboard(admin, stop, got):
    """Reads the stream until `stop`; every 10 s fetches the fleet series."""
    s = socket.create_connection(admin)
    s.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.settimeout(0.5)
    last_series = 0.0
    while not stop.is_set():
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            chunk = b""
        got[0] += chunk.count(b"event: tick")
        got[1] += len(chunk)
        if time.time() - last_series >= 10:
            last_series = time.time()
            c = socket.create_connection(admin)
            c.sendall(b"GET /api/v1/series HTTP/1.1\r\nHost: bench\r\n\r\n")
            while c.recv(1 << 16):
                pass
            c.close()
    s.close()


def main():
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    bindir = os.path.join(ROOT, "target", "release")
    work = tempfile.mkdtemp(prefix="portico-dash-")
    try:
        with Procs() as procs:
            up = "http://127.0.0.1:%d" % upstream(procs, work)
            stack = Stack(procs, work, bindir, "dash")
            hosts = ["h%d.dash.test" % i for i in range(n)]
            stack.add_routes(hosts, up)
            wait_status(stack.proxy, hosts[-1], 200)
            script = os.path.join(work, "all.lua")
            with open(script, "w") as f:
                f.write("local reqs, i = {}, 0\n"
                        "init = function(args)\n  for k = 0, %d do reqs[#reqs + 1] = wrk.format('GET', '/', {Host = 'h' .. k .. '.dash.test'}) end\nend\n"
                        "request = function() i = i %% #reqs + 1; return reqs[i] end\n" % (n - 1))
            load = subprocess.Popen(pinned(["wrk", "-t1", "-c16", "-d%ds" % (secs * rounds * 2 + 30), "-s", script,
                                            "http://%s:%d/" % stack.proxy], LOAD_CPU),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(5)  # every route reported at least once
                res = {"without": [], "with": []}
                ticks = []
                for r in range(rounds):
                    for mode in (("without", "with") if r % 2 == 0 else ("with", "without")):
                        stop, got = threading.Event(), [0, 0]
                        t = None
                        if mode == "with":
                            t = threading.Thread(target=dashboard, args=(stack.cp_addrs["admin"], stop, got))
                            t.start()
                            time.sleep(1)
                        before = cpu(stack.cp.pid)
                        time.sleep(secs)
                        res[mode].append((cpu(stack.cp.pid) - before) / secs)
                        stop.set()
                        if t:
                            t.join()
                            ticks.append((got[0], got[1]))
                        print("round %d %s: control plane %.2f %% of a core" % (r + 1, mode, 100 * res[mode][-1]),
                              file=sys.stderr)
            finally:
                load.terminate()
                load.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    w, wo = median(res["with"]), median(res["without"])
    per_tick = median([b / max(1, k) for k, b in ticks])
    print("| %d routes, all with traffic | control-plane CPU, %% of a core (median of %d × %d s) |" % (n, rounds, secs))
    print("|---|---|")
    print("| no dashboard | %.2f %% |" % (100 * wo))
    print("| one dashboard (stream + series every 10 s) | %.2f %% |" % (100 * w))
    print("| the dashboard's cost | %+.2f %% of a core; a tick is %.0f KB |" % (100 * (w - wo), per_tick / 1000))


if __name__ == "__main__":
    main()
