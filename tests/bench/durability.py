#!/usr/bin/env python3
"""Durability figures for the control plane (release build, loopback):
  1. load 10,000 sessions x 10 routes (100,000 routes), each applied;
  2. the store's size on disk;
  3. restart: time from starting portico-cp to its first answered RECONNECT;
  4. CONFIG_APPLY latency of a one-route change (median, p99 over N applies),
     with fsync (the default) and with --unsafe-no-fsync (the in-memory figure).
Compares Portico with itself only.

Usage: cargo build --release --bins && python3 tests/bench/durability.py [sessions] [applies]
"""
import os, shutil, sys, tempfile, threading, time

from benchlib import ROOT, Conn, Procs, median, percentile, spawn_portico

BIN = os.path.join(ROOT, "target", "release")


def start(procs, data_dir, *extra):
    proc, addrs = spawn_portico(procs, BIN, "portico-cp", [
        "--registry-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--data-dir", data_dir, *extra])
    return proc, addrs["registry"]


def load(addr, sessions, workers=8):
    ids = [None] * sessions

    def work(w):
        c = Conn(addr)
        for i in range(w, sessions, workers):
            sid = c.send("REGISTER|load|i%d|0|{}" % i).split("|", 1)[1]
            ids[i] = sid
            adds = ["ROUTE_ADD|%s|s%d-r%d.load.test|/|http://127.0.0.1:9|0" % (sid, i, r) for r in range(10)]
            replies = c.send_many(adds + ["CONFIG_APPLY|%s" % sid])
            assert replies[-1] == "OK", replies[-1]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return ids


def apply_latency(addr, n):
    c = Conn(addr)
    sid = c.send("REGISTER|lat|lat-1|0|{}").split("|", 1)[1]
    times = []
    for i in range(n):
        c.send("ROUTE_ADD|%s|lat%d.test|/|http://127.0.0.1:9|0" % (sid, i))
        t0 = time.perf_counter()
        assert c.send("CONFIG_APPLY|%s" % sid) == "OK"
        times.append((time.perf_counter() - t0) * 1000)
    return median(times), percentile(times, 0.99)


def main():
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    applies = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    data = tempfile.mkdtemp(prefix="portico-durability-")
    try:
        with Procs() as procs:
            proc, addr = start(procs, data)
            t0 = time.time()
            ids = load(addr, sessions)
            print("loaded %d sessions x 10 routes in %.1f s" % (sessions, time.time() - t0))
            proc.terminate(); proc.wait()
            size = os.path.getsize(os.path.join(data, "state.redb"))
            print("store size: %.1f MB (%.0f bytes per route)" % (size / 1e6, size / (sessions * 10)))
            t0 = time.perf_counter()
            proc, addr = start(procs, data)
            reply = Conn(addr).send("RECONNECT|%s" % ids[-1])
            print("restart to first RECONNECT (%s): %.0f ms" % (reply, (time.perf_counter() - t0) * 1000))
            med, p99 = apply_latency(addr, applies)
            print("CONFIG_APPLY with fsync, %d routes loaded: median %.2f ms, p99 %.2f ms" % (sessions * 10, med, p99))
            proc.terminate(); proc.wait()
            proc, addr = start(procs, data, "--unsafe-no-fsync")
            med, p99 = apply_latency(addr, applies)
            print("CONFIG_APPLY without fsync, %d routes loaded: median %.2f ms, p99 %.2f ms" % (sessions * 10, med, p99))
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
