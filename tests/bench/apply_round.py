#!/usr/bin/env python3
"""Times one REGISTER + ROUTE_ADD + CONFIG_APPLY round on loopback against
release builds of portico-cp and portico-dp, with 1 and then 2 data planes.
Compares nothing; it reports the latency a service sees for its first apply.

Usage: cargo build --release --bins && python3 tests/bench/apply_round.py [rounds]
"""
import os, shutil, sys, tempfile, time

from benchlib import ROOT, Conn, Procs, median, percentile, start_control_plane, start_data_plane

BIN = os.path.join(ROOT, "target", "release")


def run(planes, rounds):
    data = tempfile.mkdtemp(prefix="portico-apply-")
    try:
        with Procs() as procs:
            _, cp = start_control_plane(procs, BIN, data)
            for i in range(planes):
                start_data_plane(procs, BIN, cp, "bench-%d" % i)
            times = []
            for n in range(rounds):
                t0 = time.perf_counter()
                c = Conn(cp["registry"])
                sid = c.register("bench", "i%d" % n)
                replies = c.send_many(["ROUTE_ADD|%s|h%d.bench|/|http://127.0.0.1:9|0" % (sid, n), "CONFIG_APPLY|" + sid])
                assert replies[0].startswith("ROUTE_OK") and replies[1] == "OK", replies
                times.append((time.perf_counter() - t0) * 1000)
                c.close()
            return median(times), percentile(times, 0.99)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for planes in (1, 2):
        med, p99 = run(planes, rounds)
        print("%d data plane(s): REGISTER+ROUTE_ADD+CONFIG_APPLY median %.2f ms, p99 %.2f ms over %d rounds"
              % (planes, med, p99, rounds))
