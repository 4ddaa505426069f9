#!/usr/bin/env python3
"""Times the first CONFIG_APPLY right after a control-plane restart: SIGKILL
the control plane under 1 and then 2 data planes, start it again on the same
ports and data dir, RECONNECT, ROUTE_ADD, and time CONFIG_APPLY to OK; then
one request to each data plane must already be served (200).

Usage: cargo build --release --bins && python3 tests/bench/restart_apply.py [rounds]
"""
import os, shutil, sys, tempfile, time

from benchlib import (ROOT, Conn, Procs, median, percentile, request, spawn_portico,
                      start_control_plane, start_data_plane, wait_status)

BIN = os.path.join(ROOT, "target", "release")


def restart(procs, cp, addrs, data):
    cp.kill()
    cp.wait()
    listen = ["%s:%d" % addrs[k] for k in ("registry", "grpc", "admin")]
    cp, _ = spawn_portico(procs, BIN, "portico-cp", [
        "--registry-listen", listen[0], "--grpc-listen", listen[1],
        "--admin-listen", listen[2], "--data-dir", data])
    wait_status(addrs["admin"], "admin", 200, path="/ready")
    return cp


def run(planes, rounds):
    data = tempfile.mkdtemp(prefix="portico-restart-")
    try:
        with Procs() as procs:
            cp, addrs = start_control_plane(procs, BIN, data)
            dps = [start_data_plane(procs, BIN, addrs, "restart-%d" % i)[1] for i in range(planes)]
            sid = Conn(addrs["registry"]).register("restart", "restart-1")
            times = []
            for n in range(rounds):
                cp = restart(procs, cp, addrs, data)
                c = Conn(addrs["registry"])
                assert c.send("RECONNECT|" + sid) == "OK"
                host = "r%d.restart.test" % n
                assert c.send("ROUTE_ADD|%s|%s|/|http://127.0.0.1:9|0" % (sid, host)).startswith("ROUTE_OK")
                t0 = time.perf_counter()
                assert c.send("CONFIG_APPLY|" + sid) == "OK"
                times.append((time.perf_counter() - t0) * 1000)
                for dp in dps:
                    # The backend is a closed port: 502 means the route is served.
                    status = request(dp["proxy"], host)
                    assert status == 502, "round %d: %s answered %d right after OK" % (n, host, status)
                c.close()
            return median(times), percentile(times, 0.99), max(times)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for planes in (1, 2):
        med, p99, worst = run(planes, rounds)
        print("%d data plane(s): CONFIG_APPLY to OK after a restart: median %.1f ms, p99 %.1f ms, max %.1f ms over %d restarts"
              % (planes, med, p99, worst, rounds))
