#!/usr/bin/env python3
"""What watching Portico costs (release builds, wrk -t1 -c64, the data plane
on one worker pinned to CPU 0, load on CPU 1, nginx as the upstream):

1. throughput with the access log off and on (to a file);
2. throughput with 10,000 routes, without and while /metrics is scraped
   every 100 ms (and how long a scrape takes).

Runs interleave (A B A B ...); the figures are medians.
Usage: cargo build --release --bins && python3 tests/bench/observability.py [seconds] [rounds]
"""
import os, shutil, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ROOT, Procs, median, route_to, spawn_portico, start_control_plane,  # noqa: E402
                      upstream, wait_status)
from harness import LOAD_CPU, PROXY_CPU, Stack, interleaved, wrk  # noqa: E402

BIN = os.path.join(ROOT, "target", "release")
HOST = "bench.test"


def data_plane(procs, cp, name, extra):
    p, addrs = spawn_portico(procs, BIN, "portico-dp", [
        "--control-plane", "http://%s:%d" % cp["grpc"], "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--node-id", name, "--threads", "1"] + extra, pin=PROXY_CPU)
    wait_status(addrs["admin"], "admin", 200, path="/ready")
    return addrs


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
        for addrs in planes.values():
            wait_status(addrs["proxy"], HOST, 200)
        res = interleaved(rounds, ["off", "on"], lambda n: wrk(
            "http://%s:%d/" % planes[n]["proxy"], secs, host=HOST))
        lines = sum(1 for _ in open(log_path))
        session.close()
        return {n: median([r["rps"] for r in rs]) for n, rs in res.items()}, lines


def scrape_under_load(work, secs, rounds, routes):
    with Procs() as procs:
        up = upstream(procs, work)
        stack = Stack(procs, work, BIN, "metrics")
        hosts = [HOST] + ["h%d.many.test" % i for i in range(routes - 1)]
        stack.add_routes(hosts, "http://127.0.0.1:%d" % up)
        wait_status(stack.proxy, HOST, 200)
        admin = stack.dps[0][1]["admin"]
        url = "http://%s:%d/metrics" % admin
        scrapes, size = [], [0]

        def run(name):
            stop = threading.Event()

            def scraper():
                while not stop.is_set():
                    started = time.monotonic()
                    body = urllib.request.urlopen(url, timeout=10).read()
                    scrapes.append(time.monotonic() - started)
                    size[0] = len(body)
                    stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

            t = threading.Thread(target=scraper) if name == "scraped" else None
            if t:
                t.start()
            try:
                return wrk("http://%s:%d/" % stack.proxy, secs, host=HOST)
            finally:
                stop.set()
                if t:
                    t.join()

        res = interleaved(rounds, ["plain", "scraped"], run)
        rps = {n: median([r["rps"] for r in rs]) for n, rs in res.items()}
        return rps, median(scrapes) * 1000, max(scrapes) * 1000, len(scrapes), size[0]


def main():
    # The scraper thread runs here: keep it off the data plane's CPU.
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > LOAD_CPU:
        os.sched_setaffinity(0, {LOAD_CPU})
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    routes = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    work = tempfile.mkdtemp(prefix="portico-obs-")
    try:
        rps, lines = access_log(work, secs, rounds)
        print("access log: off %.0f req/s, on %.0f req/s (%+.1f %%), %d lines written"
              % (rps["off"], rps["on"], 100 * (rps["on"] / rps["off"] - 1), lines))
        rps, p50, worst, n, size = scrape_under_load(work, secs, rounds, routes)
        print("%d routes: plain %.0f req/s, scraped every 100 ms %.0f req/s (%+.1f %%); "
              "%d scrapes, median %.1f ms, slowest %.1f ms, %d KB each"
              % (routes, rps["plain"], rps["scraped"], 100 * (rps["scraped"] / rps["plain"] - 1),
                 n, p50, worst, size // 1024))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
