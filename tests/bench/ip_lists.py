#!/usr/bin/env python3
"""What IP lists and geo rules cost per request: one data plane (one worker,
CPU 0) with a GeoIP database of 10,000 networks, two routes to the same
upstream, one plain and one with a 1,000-entry ip_deny list, a 1,000-entry
ip_allow list (the client's network last) and geo_allow / geo_deny. wrk -t1
-c64 on CPU 1, rounds alternating between the routes; the median of each.
The database is written with mmdb-writer from target/tests-venv
(scripts/setup.sh --tests).

Usage: cargo build --release --bins && python3 tests/bench/ip_lists.py [seconds] [rounds]
"""
import os, shutil, subprocess, sys, tempfile

from benchlib import ROOT, Conn, Procs, median, start_control_plane, start_data_plane, upstream, wait_status

BIN = os.path.join(ROOT, "target", "release")
PYTHON = os.path.join(ROOT, "target", "tests-venv", "bin", "python")

WRITE_DB = """
import sys
from mmdb_writer import MMDBWriter
from netaddr import IPSet
w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
w.insert_network(IPSet(["127.0.0.0/8"]), {"country": {"iso_code": "DE"}})
for i in range(10000):
    w.insert_network(IPSet(["%d.%d.%d.0/24" % (11 + i // 65536, (i // 256) % 256, i % 256)]), {"country": {"iso_code": "US"}})
w.to_db_file(sys.argv[1])
"""


def wrk(addr, host, secs):
    argv = ["wrk", "-t1", "-c64", "-d%ds" % secs, "-H", "Host: " + host, "http://%s:%d/" % addr]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", "1"] + argv
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = [float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec:")]
    assert rps and "Non-2xx" not in out, out
    return rps[0]


def main():
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    work = tempfile.mkdtemp(prefix="portico-iplists-")
    try:
        with Procs() as procs:
            port = upstream(procs, work)
            db = os.path.join(work, "country.mmdb")
            subprocess.run([PYTHON, "-c", WRITE_DB, db], check=True)
            _, cp = start_control_plane(procs, BIN, os.path.join(work, "data"), pin=1)
            _, dp = start_data_plane(procs, BIN, cp, "iplists", pin=0, extra=["--geoip-db", db])
            c = Conn(cp["registry"])
            sid = c.register("bench", "bench-1")
            backend = "http://127.0.0.1:%d" % port
            plain = c.send("ROUTE_ADD|%s|plain.test|/|%s|0" % (sid, backend)).split("|")[1]
            listed = c.send("ROUTE_ADD|%s|listed.test|/|%s|0" % (sid, backend)).split("|")[1]
            deny = ",".join("10.%d.%d.0/24" % (i // 256, i % 256) for i in range(1000))
            allow = ",".join(["172.%d.%d.0/24" % (16 + i // 256, i % 256) for i in range(999)] + ["127.0.0.0/8"])
            assert c.send("OPTIONS_SET|%s|%s|ip_deny|%s" % (sid, listed, deny)).startswith("OPTION")
            assert c.send("OPTIONS_SET|%s|%s|ip_allow|%s" % (sid, listed, allow)).startswith("OPTION")
            assert c.send("OPTIONS_SET|%s|%s|geo_allow|DE,FR" % (sid, listed)).startswith("OPTION")
            assert c.send("OPTIONS_SET|%s|%s|geo_deny|US" % (sid, listed)).startswith("OPTION")
            assert c.send("CONFIG_APPLY|" + sid) == "OK"
            for host in ("plain.test", "listed.test"):
                wait_status(dp["proxy"], host, 200)
            results = {plain: [], listed: []}
            for _ in range(rounds):
                results[plain].append(wrk(dp["proxy"], "plain.test", secs))
                results[listed].append(wrk(dp["proxy"], "listed.test", secs))
            p, l = median(results[plain]), median(results[listed])
            print("no lists: %.0f req/s; 1,000-entry ip_deny + 1,000-entry ip_allow + geo rules: %.0f req/s (%.1f %% of it) "
                  "-- medians of %d rounds of %d s" % (p, l, 100.0 * l / p, rounds, secs))
            print("rounds, no lists:", ", ".join("%.0f" % x for x in results[plain]))
            print("rounds, lists:   ", ", ".join("%.0f" % x for x in results[listed]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
