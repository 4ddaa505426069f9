#!/usr/bin/env python3
"""What watching Portico costs (release builds, the data plane on one worker
pinned to CPU 0, load on CPU 1, nginx as the upstream):

1. the access log off and on (to a file): throughput (wrk -t1 -c64), and the
   data plane's CPU per request at a fixed 10,000 req/s;
2. 10,000 routes, /metrics scraped every 100 ms over a kept-alive
   connection: throughput plain, while /ready is polled the same way (the
   same wake-ups on both CPUs, a small answer), and while /metrics is
   scraped; and the data plane's CPU per second spent on the scrapes alone.

Throughput rounds run mirrored (A B B A ...); the figures are medians.
Usage: cargo build --release --bins && python3 tests/bench/observability.py [seconds] [rounds] [routes]
"""
import os, shutil, socket, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ROOT, Procs, median, proc_counters, route_to, spawn_portico, start_control_plane,  # noqa: E402
                      upstream, wait_status)
from harness import LOAD_CPU, PROXY_CPU, Stack, interleaved, oha, wrk  # noqa: E402

BIN = os.path.join(ROOT, "target", "release")
HOST = "bench.test"
FIXED_RATE = 10_000


def cpu_seconds(pid):
    """User and system CPU of every thread of the process so far."""
    _, _, user, system = proc_counters(pid)
    return user + system


class Client:
    """GETs over one kept-alive connection, as Prometheus scrapes, each body
    read to the end and thrown away as cheaply as Python can (the scraper
    shares the load generator's CPU). A connection per scrape costs the
    proxy's throughput several per cent more, whoever answers it."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=10)
        self.buf = bytearray(1 << 16)

    def get(self, path):
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: admin\r\n\r\n" % path.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the admin listener closed the connection")
            head += chunk
        head, body = head.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        got = len(body)
        while got < length:
            got += self.sock.recv_into(self.buf)
        return length

    def close(self):
        self.sock.close()


class Poller:
    """GETs addr+path every 100 ms on a thread until stopped."""

    def __init__(self, addr, path):
        self.client, self.path, self.took, self.size = Client(addr), path, [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            started = time.monotonic()
            self.size = self.client.get(self.path)
            self.took.append(time.monotonic() - started)
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.client.close()


def data_plane(procs, cp, name, extra):
    p, addrs = spawn_portico(procs, BIN, "portico-dp", [
        "--control-plane", "http://%s:%d" % cp["grpc"], "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--node-id", name, "--threads", "1"] + extra, pin=PROXY_CPU)
    wait_status(addrs["admin"], "admin", 200, path="/ready")
    return p.pid, addrs


def cpu_per_request(pid, addrs, secs):
    """Microseconds of the data plane's CPU per request at FIXED_RATE."""
    before = cpu_seconds(pid)
    r = oha("http://%s:%d/" % addrs["proxy"], secs, FIXED_RATE, host=HOST)
    return (cpu_seconds(pid) - before) / max(1, r["requests"]) * 1e6


def access_log(work, secs, rounds):
    with Procs() as procs:
        up = upstream(procs, work)
        _, cp = start_control_plane(procs, BIN, os.path.join(work, "cp-log"), pin=LOAD_CPU)
        log_path = os.path.join(work, "access.log")
        planes = {"off": data_plane(procs, cp, "dp-plain", []),
                  "on": data_plane(procs, cp, "dp-logged", ["--access-log", log_path])}
        # Held open for the whole run: a session whose connection closes
        # loses its routes after the session grace (60 s).
        session = route_to(cp, HOST, up)
        for _, addrs in planes.values():
            wait_status(addrs["proxy"], HOST, 200)
        res = interleaved(rounds, ["off", "on"], lambda n: wrk(
            "http://%s:%d/" % planes[n][1]["proxy"], secs, host=HOST), mirrored=True)
        cost = interleaved(rounds, ["off", "on"], lambda n: {"us": cpu_per_request(*planes[n], secs)},
                           mirrored=True)
        lines = sum(1 for _ in open(log_path))
        session.close()
        return ({n: median([r["rps"] for r in rs]) for n, rs in res.items()},
                {n: median([r["us"] for r in rs]) for n, rs in cost.items()}, lines)


def scrape_under_load(work, secs, rounds, routes):
    with Procs() as procs:
        up = upstream(procs, work)
        stack = Stack(procs, work, BIN, "metrics")
        hosts = [HOST] + ["h%d.many.test" % i for i in range(routes - 1)]
        stack.add_routes(hosts, "http://127.0.0.1:%d" % up)
        wait_status(stack.proxy, HOST, 200)
        pid, admin = stack.dps[0][0].pid, stack.dps[0][1]["admin"]
        first = Client(admin)  # the first render builds each route's address list
        first.get("/metrics")
        first.close()
        scrapes = []

        def run(name):
            if name == "plain":
                return wrk("http://%s:%d/" % stack.proxy, secs, host=HOST)
            with Poller(admin, "/metrics" if name == "scraped" else "/ready") as p:
                r = wrk("http://%s:%d/" % stack.proxy, secs, host=HOST)
            if name == "scraped":
                scrapes.extend(p.took)
                r["size"] = p.size
            return r

        res = interleaved(rounds, ["plain", "polled", "scraped"], run, mirrored=True)
        rps = {n: median([r["rps"] for r in rs]) for n, rs in res.items()}
        # The scrapes' own cost: the data plane's CPU per second with no
        # traffic, idle and then scraped every 100 ms.
        idle = {}
        for name in ["idle", "scraped"]:
            before, started = cpu_seconds(pid), time.monotonic()
            if name == "idle":
                time.sleep(secs)
            else:
                with Poller(admin, "/metrics"):
                    time.sleep(secs)
            idle[name] = (cpu_seconds(pid) - before) / (time.monotonic() - started) * 1000
        size = res["scraped"][-1]["size"]
        return rps, idle, median(scrapes) * 1000, max(scrapes) * 1000, len(scrapes), size


def change(a, b):
    return 100 * (b / a - 1)


def main():
    # The scraper thread runs here: keep it off the data plane's CPU.
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > LOAD_CPU:
        os.sched_setaffinity(0, {LOAD_CPU})
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    routes = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    work = tempfile.mkdtemp(prefix="portico-obs-")
    try:
        rps, us, lines = access_log(work, secs, rounds)
        print("access log: off %.0f req/s, on %.0f req/s (%+.1f %%), %d lines written; "
              "CPU per request at %d req/s: off %.1f us, on %.1f us (%+.1f %%)"
              % (rps["off"], rps["on"], change(rps["off"], rps["on"]), lines, FIXED_RATE,
                 us["off"], us["on"], change(us["off"], us["on"])))
        rps, idle, p50, worst, n, size = scrape_under_load(work, secs, rounds, routes)
        print("%d routes: plain %.0f req/s, /ready polled %.0f req/s (%+.1f %%), /metrics scraped "
              "%.0f req/s (%+.1f %%, %+.1f %% against polled); %d scrapes, median %.1f ms, "
              "slowest %.1f ms, %d KB each; with no traffic the data plane used %.1f ms of CPU "
              "per second idle and %.1f ms scraped"
              % (routes, rps["plain"], rps["polled"], change(rps["plain"], rps["polled"]),
                 rps["scraped"], change(rps["plain"], rps["scraped"]),
                 change(rps["polled"], rps["scraped"]), n, p50, worst, size // 1024,
                 idle["idle"], idle["scraped"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
