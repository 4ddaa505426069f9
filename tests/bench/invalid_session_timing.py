#!/usr/bin/env python3
"""How long `ERROR|invalid session` takes for an id that is nothing like a
live one and for one that differs from a live id in its last digit
(docs/SECURITY.md): a session is found by the SHA-256 of the id it is
given, so the two should not differ. Each id from its own loopback address
(127.0.x.y), as the registry refuses an address past 100 unknown ids in 10 s.

Usage: python3 tests/bench/invalid_session_timing.py [--bin target/release] [--count 2000]
"""
import argparse, os, socket, sys, tempfile, shutil, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, Conn, Procs, median, percentile, start_control_plane  # noqa: E402



def ask(registry, source, line):
    s = socket.create_connection(registry, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rw", newline="\n")
    t0 = time.perf_counter()
    f.write(line + "\n")
    f.flush()
    reply = f.readline().rstrip("\n")
    took = (time.perf_counter() - t0) * 1e6
    s.close()
    assert reply == "ERROR|invalid session", reply
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="portico-invalid-")
    times = {"unlike any live id": [], "a live id, last digit changed": []}
    try:
        with Procs() as procs:
            _, cp = start_control_plane(procs, args.bin, work)
            live = Conn(cp["registry"]).register("timing", "timing-1")
            near = live[:-1] + ("0" if live[-1] != "0" else "1")
            for n in range(2 * args.count):
                source = "127.0.%d.%d" % (1 + n // 250 % 250, 1 + n % 250)
                if n % 2:
                    times["a live id, last digit changed"].append(ask(cp["registry"], source, "PING|" + near))
                else:
                    other = "timing-1-%032x" % n
                    times["unlike any live id"].append(ask(cp["registry"], source, "PING|" + other))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| PING with | count | p50 | p99 |")
    print("|---|---|---|---|")
    for name, t in times.items():
        print("| %s | %d | %.1f µs | %.1f µs |" % (name, len(t), median(t), percentile(t, 0.99)))


if __name__ == "__main__":
    main()
