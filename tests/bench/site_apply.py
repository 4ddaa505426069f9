#!/usr/bin/env python3
"""Times site files (--sites, docs/SITES.md) from the write to served by every
data plane, against release builds: one file of 1,000 routes, then one-line
changes to it (one route's path), each saved whole as editors save.

A route counts as served when every data plane answers its host and path with
the upstream's 200; each plane is polled on its own thread, on a new
connection every millisecond or so.

Usage: cargo build --release --bins && python3 tests/bench/site_apply.py [routes] [changes] [planes]
"""
import os, shutil, sys, tempfile, threading, time

from benchlib import ROOT, Procs, percentile, median, request, start_control_plane, start_data_plane, upstream

BIN = os.path.join(ROOT, "target", "release")


def site(routes, port, changed_path):
    lines = ["service:", "  name: bench", "routes:"]
    for i in range(routes):
        path = changed_path if i == routes // 2 else "/"
        lines += ["  - domains: [h%d.site.bench]" % i, "    path: %s" % path,
                  "    backend: http://127.0.0.1:%d" % port]
    return "\n".join(lines) + "\n"


def save(path, text):
    aside = path + ".tmp~"
    with open(aside, "w") as f:
        f.write(text)
    os.rename(aside, path)


def served_everywhere(planes, host, path, timeout=30):
    """Seconds until every plane answers 200 for host+path, from now."""
    t0 = time.perf_counter()
    took = [None] * len(planes)

    def poll(i, addr):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if request(addr, host, path) == 200:
                    took[i] = time.perf_counter() - t0
                    return
            except OSError:
                pass
            time.sleep(0.001)

    threads = [threading.Thread(target=poll, args=(i, a)) for i, a in enumerate(planes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(t is not None for t in took), "not served by every plane within %ds" % timeout
    return max(took)


def main():
    routes = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    changes = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    n_planes = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    work = tempfile.mkdtemp(prefix="portico-sites-bench-")
    try:
        sites = os.path.join(work, "sites")
        os.makedirs(sites)
        with Procs() as procs:
            port = upstream(procs, work)
            _, cp = start_control_plane(procs, BIN, os.path.join(work, "data"), extra=["--sites", sites])
            planes = [start_data_plane(procs, BIN, cp, "site-bench-%d" % i)[1]["proxy"] for i in range(n_planes)]
            file = os.path.join(sites, "bench.yaml")
            middle = "h%d.site.bench" % (routes // 2)
            last = "h%d.site.bench" % (routes - 1)

            save(file, site(routes, port, "/v0"))
            whole = served_everywhere(planes, last, "/")
            served_everywhere(planes, middle, "/v0")
            print("a site file of %d routes: written to served by %d data planes in %.0f ms"
                  % (routes, n_planes, whole * 1000))

            times = []
            for n in range(1, changes + 1):
                save(file, site(routes, port, "/v%d" % n))
                times.append(served_everywhere(planes, middle, "/v%d" % n) * 1000)
            print("a one-line change to it: median %.1f ms, p99 %.1f ms, max %.1f ms over %d changes"
                  % (median(times), percentile(times, 0.99), max(times), changes))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
