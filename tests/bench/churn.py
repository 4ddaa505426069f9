#!/usr/bin/env python3
"""The churn soak of docs/BENCHMARKS.md: deploys that come and go. Each round
REGISTERs a new instance of one of 50 services, adds 5 routes, applies, sends
one request through the data plane and shuts the session down. Reports the
resident memory of both planes, their open file descriptors and the control
plane's internal counts after the warm-up and at each checkpoint.

Usage: cargo build --release --bins && python3 tests/bench/churn.py [rounds] [warmup] [bindir]
"""
import json, os, shutil, socket, sys, tempfile, time

from benchlib import ROOT, Conn, Procs, request, rss_mb, start_control_plane, start_data_plane

BIN = os.path.join(ROOT, "target", "release")


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def counts(addr):
    """The control plane's /debug/counts; None from a build without it."""
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"GET /debug/counts HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return json.loads(body) if b" 200 " in head.split(b"\r\n")[0] else None


def deploy(addrs, dp, backend, n):
    service = "svc-%d" % (n % 50)
    c = Conn(addrs["registry"])
    sid = c.register(service, "%s-i%d" % (service, n))
    lines = ["ROUTE_ADD|%s|h%d.%s.churn|/|%s|0" % (sid, r, service, backend) for r in range(5)]
    replies = c.send_many(lines + ["CONFIG_APPLY|" + sid])
    assert replies[-1] == "OK", replies
    status = request(dp["proxy"], "h0.%s.churn" % service, "/healthz")
    assert status == 200, status
    assert c.send("CLIENT_SHUTDOWN|" + sid) == "SHUTDOWN_OK"
    c.close()


def snapshot(cp, cp_addrs, dp_proc):
    time.sleep(1.5)  # one telemetry report and the grace of idle connections
    return {"cp_rss_mb": round(rss_mb(cp.pid), 1), "dp_rss_mb": round(rss_mb(dp_proc.pid), 1),
            "cp_fds": fds(cp.pid), "dp_fds": fds(dp_proc.pid), "counts": counts(cp_addrs["admin"])}


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    warmup = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    bindir = sys.argv[3] if len(sys.argv) > 3 else BIN
    checkpoints = sorted({min(rounds, c) for c in (1_000, 5_000, 10_000)} | {rounds})
    data = tempfile.mkdtemp(prefix="portico-churn-")
    try:
        with Procs() as procs:
            cp, addrs = start_control_plane(procs, bindir, data)
            dp_proc, dp = start_data_plane(procs, bindir, addrs, "churn-dp")
            backend = "http://%s:%d" % dp["admin"]  # its /healthz answers 200
            for n in range(warmup):
                deploy(addrs, dp, backend, n)
            base = snapshot(cp, addrs, dp_proc)
            print("after %d warm-up rounds: %s" % (warmup, json.dumps(base)), flush=True)
            t0 = time.perf_counter()
            for n in range(1, rounds + 1):
                deploy(addrs, dp, backend, warmup + n)
                if n in checkpoints:
                    s = snapshot(cp, addrs, dp_proc)
                    print("after %d sessions (%.0f rounds/s): %s"
                          % (n, n / (time.perf_counter() - t0), json.dumps(s)), flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
