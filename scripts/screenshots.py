#!/usr/bin/env python3
"""Takes the dashboard screenshots in docs/ (docs/dashboard.png and
docs/dashboard-route.png): a release control plane and data plane on
loopback with a few routes, a certificate and a minute of varying traffic
(some of it to a backend that is down), then headless Chromium.

Usage: cargo build --release --bins && python3 scripts/screenshots.py
"""
import os, subprocess, sys, tempfile, shutil, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
from benchlib import Procs, free_port, upstream, wait_status  # noqa: E402
from harness import Stack  # noqa: E402


def shoot(url, out, profile):
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--hide-scrollbars", "--window-size=1500,1250", "--virtual-time-budget=8000",
                    "--user-data-dir=" + profile, "--screenshot=" + out, url],
                   check=True, capture_output=True, timeout=120)


def main():
    work = tempfile.mkdtemp(prefix="portico-shots-")
    try:
        certs = os.path.join(work, "certs", "shop")
        os.makedirs(certs)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "21", "-subj", "/CN=shop.example.com",
                        "-addext", "subjectAltName=DNS:shop.example.com,DNS:www.shop.example.com",
                        "-keyout", os.path.join(certs, "privkey.pem"), "-out", os.path.join(certs, "fullchain.pem")],
                       check=True, capture_output=True)
        with Procs() as procs:
            up = "http://127.0.0.1:%d" % upstream(procs, work)
            stack = Stack(procs, work, os.path.join(ROOT, "target", "release"), "shots",
                          cp_args=("--cert-dir", os.path.join(work, "certs")), pin_dp=None, pin_cp=None)
            hosts = ["shop.example.com", "api.example.com", "static.example.com"]
            stack.add_routes(hosts, up)
            down = "http://127.0.0.1:%d" % free_port()
            assert stack.conn.send("ROUTE_ADD|%s|legacy.example.com|/|%s|0" % (stack.sid, down)).startswith("ROUTE_OK")
            assert stack.conn.send("CONFIG_APPLY|" + stack.sid) == "OK"
            wait_status(stack.proxy, hosts[-1], 200)
            url = "http://%s:%d/" % stack.proxy
            for rate, secs in ((300, 15), (900, 15), (500, 15)):
                for host in hosts:
                    procs.start(["oha", "-z", "%ds" % secs, "-q", str(rate // 3), "--no-tui", "-H", "Host: " + host,
                                 url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.start(["oha", "-z", "%ds" % secs, "-q", "20", "--no-tui", "-H", "Host: legacy.example.com",
                             url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(secs)
            time.sleep(11)  # the last step closes
            admin = "http://%s:%d" % stack.cp_addrs["admin"]
            profile = os.path.join(work, "chromium")
            shoot(admin + "/?ticks=2", os.path.join(ROOT, "docs", "dashboard.png"), profile)
            shoot(admin + "/?ticks=2#/route/r1", os.path.join(ROOT, "docs", "dashboard-route.png"), profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("wrote docs/dashboard.png and docs/dashboard-route.png")


if __name__ == "__main__":
    main()
