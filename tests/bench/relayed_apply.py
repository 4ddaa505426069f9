#!/usr/bin/env python3
"""The cost of relaying (docs/HA.md): CONFIG_APPLY sent to the replica that
runs the session against one sent to a replica that relays it there, three
replicas on one etcd and two data planes, alternating, each apply after one
ROUTE_ADD on the same connection; then PING the same way (the hop alone).
Prints median and p99 of each (ms).

Usage: python3 tests/bench/relayed_apply.py [--bin target/release] [--applies 1000]
"""
import argparse, os, sys, tempfile, shutil, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, Conn, Procs, median, percentile, upstream  # noqa: E402
from replicated import control_planes, data_planes  # noqa: E402



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--applies", type=int, default=1000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="portico-relayed-")
    try:
        with Procs() as procs:
            backend = "http://127.0.0.1:%d" % upstream(procs, work)
            cps = control_planes(procs, work, args.bin, "etcd")
            data_planes(procs, args.bin, cps, 2, "relayed")
            owner, relay = Conn(cps[0]["registry"]), Conn(cps[1]["registry"])
            sid = owner.register("relayed", "relayed-1")
            times = {"on the session's replica": [], "relayed from another replica": []}
            for n in range(2 * args.applies):
                name, conn = (("on the session's replica", owner), ("relayed from another replica", relay))[n % 2]
                added = conn.send("ROUTE_ADD|%s|a%d.relayed.test|/|%s|0" % (sid, n, backend))
                assert added.startswith("ROUTE_OK"), added
                t0 = time.perf_counter()
                reply = conn.send("CONFIG_APPLY|" + sid)
                times[name].append((time.perf_counter() - t0) * 1000)
                assert reply == "OK", reply
            # The hop alone: a command that writes nothing.
            pings = {name: [] for name in times}
            for n in range(2 * args.applies):
                name, conn = (("on the session's replica", owner), ("relayed from another replica", relay))[n % 2]
                t0 = time.perf_counter()
                assert conn.send("PING|" + sid) == "PONG"
                pings[name].append((time.perf_counter() - t0) * 1000)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| command | sent to | count | p50 | p99 |")
    print("|---|---|---|---|---|")
    for command, table in (("CONFIG_APPLY", times), ("PING", pings)):
        for name, t in table.items():
            print("| %s | %s | %d | %.2f ms | %.2f ms |" % (command, name, len(t), median(t), percentile(t, 0.99)))
        (a, b) = table.values()
        print("\n%s: extra for the relay: p50 %+.2f ms, p99 %+.2f ms\n"
              % (command, median(b) - median(a), percentile(b, 0.99) - percentile(a, 0.99)))


if __name__ == "__main__":
    main()
