#!/usr/bin/env python3
"""Failed requests while data planes stop and upgrade under open-loop load
(oha, 64 connections, release builds, nginx answering as the upstream):

1. upgrade: a new portico-dp --upgrade takes the sockets of the running one
   (SIGQUIT), with keep-alive clients and with a new connection per request;
2. rolling restart: two data planes behind nginx as the load balancer
   (`proxy_next_upstream error`, its default), each stopped (SIGTERM) and
   started again on its port in turn.

Usage: cargo build --release --bins && python3 tests/bench/stop_upgrade.py [seconds]
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time

from benchlib import (ROOT, Procs, free_port, nginx, route_to, spawn_portico, start_control_plane, upstream,
                      wait_status)

BIN = os.path.join(ROOT, "target", "release")
HOST = "bench.stop.test"
RATE = 2000


def dp_args(cp, name, proxy, admin, work):
    return ["--control-plane", "http://%s:%d" % cp["grpc"], "--listen", "127.0.0.1:%d" % proxy,
            "--admin-listen", "127.0.0.1:%d" % admin, "--node-id", name, "--threads", "1",
            "--snapshot-cache", os.path.join(work, "%d.snapshot" % proxy),
            "--upgrade-sock", os.path.join(work, "%d.upgrade.sock" % proxy)]


def data_plane(procs, cp, name, proxy, admin, work):
    p, _ = spawn_portico(procs, BIN, "portico-dp", dp_args(cp, name, proxy, admin, work))
    wait_status(("127.0.0.1", admin), "admin", 200, path="/ready")
    return p


def oha(url, secs, keepalive):
    argv = ["oha", "-z", "%ds" % secs, "-q", str(RATE), "--no-tui", "--output-format", "json",
            "-c", "64", "-H", "Host: " + HOST, url]
    if not keepalive:
        argv.append("--disable-keepalive")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(run):
    out, err = run.communicate()
    r = json.loads(out)
    codes = {int(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
    # Requests oha itself cancels when its time is up are not answers.
    errors = {k: v for k, v in r.get("errorDistribution", {}).items() if "aborted due to deadline" not in k}
    failed = sum(errors.values()) + sum(v for k, v in codes.items() if k != 200)
    return sum(codes.values()), failed, errors, codes


def upgrade(work, secs, keepalive):
    with Procs() as procs:
        up = upstream(procs, work)
        _, cp = start_control_plane(procs, BIN, os.path.join(work, "cp-up-%s" % keepalive))
        proxy, admin = free_port(), free_port()
        old = data_plane(procs, cp, "dp-old", proxy, admin, work)
        c = route_to(cp, HOST, up)
        run = oha("http://127.0.0.1:%d/" % proxy, secs, keepalive)
        time.sleep(secs / 3)
        new = procs.start([os.path.join(BIN, "portico-dp"), "--upgrade"]
                          + dp_args(cp, "dp-new", proxy, admin, work),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        old.send_signal(signal.SIGQUIT)
        old.wait(30)
        sent, failed, errors, codes = outcome(run)
        assert new.poll() is None, "the new data plane is serving"
        c.close()
        return sent, failed, errors, codes, old.returncode


def rolling(work, secs):
    with Procs() as procs:
        up = upstream(procs, work)
        _, cp = start_control_plane(procs, BIN, os.path.join(work, "cp-rolling"))
        ports = [(free_port(), free_port()) for _ in range(2)]
        planes = [data_plane(procs, cp, "dp-%d" % i, p, a, work) for i, (p, a) in enumerate(ports)]
        c = route_to(cp, HOST, up)
        lb = free_port()
        servers = "".join("server 127.0.0.1:%d max_fails=1 fail_timeout=1s; " % p for p, _ in ports)
        nginx(procs, work, "lb", "upstream planes { %s keepalive 64; } server { listen 127.0.0.1:%d; "
              "location / { proxy_pass http://planes; proxy_http_version 1.1; "
              "proxy_set_header Connection \"\"; proxy_set_header Host $host; } }" % (servers, lb))
        wait_status(("127.0.0.1", lb), HOST, 200)
        run = oha("http://127.0.0.1:%d/" % lb, secs, True)
        time.sleep(1)
        for i, (proxy, admin) in enumerate(ports):
            planes[i].send_signal(signal.SIGTERM)
            planes[i].wait(30)
            planes[i] = data_plane(procs, cp, "dp-%d-again" % i, proxy, admin, work)
            # nginx (no active health checks) tries a failed server again
            # after fail_timeout: the next one stops once this one is back.
            time.sleep(3)
        sent, failed, errors, codes = outcome(run)
        c.close()
        return sent, failed, errors, codes


if __name__ == "__main__":
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    work = tempfile.mkdtemp(prefix="portico-stop-")
    try:
        for keepalive in (True, False):
            sent, failed, errors, codes, code = upgrade(work, secs, keepalive)
            print("upgrade under %d req/s for %d s (%s): %d requests, %d failed %s, old process exit %d"
                  % (RATE, secs, "keep-alive" if keepalive else "a connection per request",
                     sent, failed, errors or "", code))
        sent, failed, errors, codes = rolling(work, max(secs, 10))
        print("rolling restart of 2 data planes behind nginx under %d req/s: %d requests, %d failed %s %s"
              % (RATE, sent, failed, errors or "", {k: v for k, v in codes.items() if k != 200} or ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
