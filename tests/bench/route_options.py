#!/usr/bin/env python3
"""What route options cost per request: one data plane (one worker, CPU 0),
two routes to the same upstream, one plain and one with the options given
(OPTIONS_SET lines' key=value), wrk -t1 -c64 on CPU 1, rounds alternating;
the median of each.

Usage: cargo build --release --bins && python3 tests/bench/route_options.py SECONDS ROUNDS key=value [key=value ...]
  e.g. tests/bench/route_options.py 10 5 strip_prefix=on add_prefix=/v2 preserve_host=off
"""
import os, shutil, sys, tempfile

from benchlib import ROOT, Conn, Procs, median, start_control_plane, start_data_plane, upstream, wait_status
from ip_lists import wrk

BIN = os.path.join(ROOT, "target", "release")


def main():
    secs, rounds = int(sys.argv[1]), int(sys.argv[2])
    options = [a.split("=", 1) for a in sys.argv[3:]]
    work = tempfile.mkdtemp(prefix="portico-options-")
    try:
        with Procs() as procs:
            port = upstream(procs, work)
            _, cp = start_control_plane(procs, BIN, os.path.join(work, "data"), pin=1)
            _, dp = start_data_plane(procs, BIN, cp, "options", pin=0)
            c = Conn(cp["registry"])
            sid = c.register("bench", "bench-1")
            backend = "http://127.0.0.1:%d" % port
            c.send("ROUTE_ADD|%s|plain.test|/|%s|0" % (sid, backend))
            set_ = c.send("ROUTE_ADD|%s|set.test|/|%s|0" % (sid, backend)).split("|")[1]
            for key, value in options:
                reply = c.send("OPTIONS_SET|%s|%s|%s|%s" % (sid, set_, key, value))
                assert reply.startswith("OPTION"), reply
            assert c.send("CONFIG_APPLY|" + sid) == "OK"
            for host in ("plain.test", "set.test"):
                wait_status(dp["proxy"], host, 200)
            plain, with_options = [], []
            for _ in range(rounds):
                plain.append(wrk(dp["proxy"], "plain.test", secs))
                with_options.append(wrk(dp["proxy"], "set.test", secs))
            p, o = median(plain), median(with_options)
            print("no options: %.0f req/s; %s: %.0f req/s (%.1f %% of it) -- medians of %d rounds of %d s"
                  % (p, " ".join(sys.argv[3:]), o, 100.0 * o / p, rounds, secs))
            print("rounds, no options:", ", ".join("%.0f" % x for x in plain))
            print("rounds, options:   ", ", ".join("%.0f" % x for x in with_options))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
