#!/usr/bin/env python3
"""Memory per idle keep-alive client connection, and whether it comes back:
each connection sends one request, reads the answer and stays open. Resident
memory of the proxy before, with N connections held, and 30 s after they all
closed; Portico's data plane, the bare Pingora proxy and nginx (one worker
each, release builds, nginx answering as the upstream).

Usage: cargo build --release --bins --examples && python3 tests/bench/idle_conns.py [N ...]
"""
import os, resource, shutil, socket, subprocess, sys, tempfile, time

from benchlib import (ROOT, Procs, free_port, nginx, route_to, rss_mb, start_control_plane, start_data_plane,
                      upstream, wait_status)

BIN = os.path.join(ROOT, "target", "release")
HOST = "idle.bench.test"
REQUEST = ("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST).encode()


def worker_pid(master):
    """nginx's worker (the one process that holds the connections)."""
    out = subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else master.pid


RUNS = [0]


def open_idle(port, n, batch=200):
    """n connections, each with one answered request, opened `batch` at a
    time (clients arrive over time), from as many loopback source addresses
    as the port range needs."""
    conns = []
    # Each run from other source addresses: the last run's ports may still
    # be in TIME_WAIT.
    RUNS[0] += 1
    for start in range(0, n, batch):
        fresh = []
        for i in range(start, min(n, start + batch)):
            s = socket.socket()
            s.bind(("127.0.%d.%d" % (1 + RUNS[0], 2 + i // 20000), 0))
            s.connect(("127.0.0.1", port))
            s.sendall(REQUEST)
            fresh.append(s)
        for s in fresh:
            s.settimeout(10)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("closed after %d bytes: %r" % (len(got), got[:200]))
                got += chunk
            if not got.startswith(b"HTTP/1.1 200"):
                raise RuntimeError("answer: %r" % got[:200])
        conns += fresh
    return conns


def upstream_conns(pid, port):
    """The proxy's connections open to the upstream: its idle backend pool."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", "127.0.0.1:%d" % port],
                         capture_output=True, text=True).stdout
    return sum("pid=%d," % pid in line for line in out.splitlines())


def measure(pid, port, n, up):
    time.sleep(1)
    before = rss_mb(pid)
    conns = open_idle(port, n)
    time.sleep(5)
    held = rss_mb(pid)
    pooled = upstream_conns(pid, up)
    for s in conns:
        s.close()
    samples = []
    for _ in range(30):
        time.sleep(1)
        samples.append(rss_mb(pid))
    return before, held, samples[-1], (held - before) * 1024 / n, pooled


def main(counts):
    # Root may raise the hard limit too; the proxies inherit it.
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200000, 200000))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The data plane's default limit is half the open-file limit; let it
    # take all the connections asked for.
    os.environ["PORTICO_MAX_CLIENT_CONNECTIONS"] = str(max(counts) + 100)
    work = tempfile.mkdtemp(prefix="portico-idle-")
    rows = []
    try:
        for n in counts:
            with Procs() as procs:
                up = upstream(procs, work)
                cp, addrs = start_control_plane(procs, BIN, os.path.join(work, "cp%d" % n))
                dp, dp_addrs = start_data_plane(procs, BIN, addrs, "idle")
                c = route_to(addrs, HOST, up)
                ng = free_port()
                master = nginx(procs, work, "proxy", "keepalive_timeout 300s; keepalive_requests 100000; "
                               "server { listen 127.0.0.1:%d; location / { proxy_pass http://127.0.0.1:%d; } }"
                               % (ng, up), connections=max(counts) + 1000)
                bare = free_port()
                bp = procs.start([os.path.join(BIN, "examples", "bare_proxy"), "127.0.0.1:%d" % bare,
                                  "127.0.0.1:%d" % up], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_status(("127.0.0.1", ng), HOST, 200)
                wait_status(("127.0.0.1", bare), HOST, 200)
                for name, pid, port in (("Portico data plane", dp.pid, dp_addrs["proxy"][1]),
                                        ("bare Pingora", bp.pid, bare),
                                        ("nginx (worker)", worker_pid(master), ng)):
                    before, held, after, per, pooled = measure(pid, port, n, up)
                    rows.append((n, name, before, held, after, per))
                    print("%6d idle connections, %-18s %6.1f -> %6.1f MB, %5.2f KB each (with %d idle backend "
                          "connections pooled), %6.1f MB 30 s after they closed"
                          % (n, name, before, held, per, pooled, after), flush=True)
                c.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5000])
