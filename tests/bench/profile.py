#!/usr/bin/env python3
"""A CPU profile of one proxy under wrk load, for docs/BENCHMARKS.md: Portico's
data plane (fast path on or off) or the bare pingora-core and pingora-proxy
references, one worker on CPU 0, the upstream and wrk on CPU 1. Prints the
hottest functions (self time, then with callees) from `perf record -g`.
Needs perf (Debian: linux-perf) and the release build.

Usage: cargo build --release --workspace --bins && cargo build --release --workspace --examples
       python3 tests/bench/profile.py [portico|portico-proxy|core|pingora] [seconds] [top]
"""
import os, subprocess, sys, tempfile, threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ROOT, Procs, free_port, route_to, start_control_plane,  # noqa: E402
                      start_data_plane, upstream, wait_status)
from harness import HOST, LOAD_CPU, PROXY_CPU, wrk  # noqa: E402


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "portico"
    secs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    bindir = os.path.join(ROOT, "target", "release")
    with Procs() as procs, tempfile.TemporaryDirectory() as work:
        up = upstream(procs, work)
        if which in ("core", "pingora"):
            port = free_port()
            example = "bare_core" if which == "core" else "bare_proxy"
            pid = procs.start([os.path.join(bindir, "examples", example), "127.0.0.1:%d" % port,
                               "127.0.0.1:%d" % up], pin=PROXY_CPU).pid
            addr = ("127.0.0.1", port)
        else:
            cp, cp_addrs = start_control_plane(procs, bindir, work + "/cp", pin=LOAD_CPU)
            extra = ["--fast-path", "off"] if which == "portico-proxy" else []
            dp, addrs = start_data_plane(procs, bindir, cp_addrs, "profile", pin=PROXY_CPU, extra=extra)
            route_to(cp_addrs, HOST, up)
            pid, addr = dp.pid, addrs["proxy"]
        wait_status(addr, HOST, 200)
        url = "http://%s:%d/" % addr
        wrk(url, 2)
        load = threading.Thread(target=lambda: print("wrk:", wrk(url, secs + 2)))
        load.start()
        data = os.path.join(work, "perf.data")
        subprocess.run(["perf", "record", "-q", "-g", "-F", "2000", "-p", str(pid), "-o", data, "--",
                        "sleep", str(secs)], check=True)
        load.join()
        for children in ("--no-children", "--children"):
            out = subprocess.run(["perf", "report", "-i", data, "--stdio", children, "-g", "none",
                                  "--percent-limit", "0.5", "--sort", "symbol"],
                                 capture_output=True, text=True).stdout
            rows = [l for l in out.splitlines() if l.strip() and not l.startswith("#")]
            print("\n== %s ==" % children.strip("-"))
            print("\n".join(rows[:top]))


if __name__ == "__main__":
    main()
