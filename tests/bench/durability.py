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
import os, re, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CP = os.path.join(ROOT, "target", "release", "portico-cp")


def start(data_dir, *extra):
    proc = subprocess.Popen([CP, "--registry-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                             "--admin-listen", "127.0.0.1:0", "--data-dir", data_dir, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RUST_LOG": "warn,portico_cp=info"})
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("portico-cp exited")
        m = re.search(r'listening listener="registry" addr=(\S+)', line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, (host, int(port))


class Conn:
    def __init__(self, addr):
        self.s = socket.create_connection(addr)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rw", newline="\n")

    def send_many(self, lines):
        self.f.write("".join(l + "\n" for l in lines))
        self.f.flush()
        return [self.f.readline().rstrip("\n") for _ in lines]

    def send(self, line):
        return self.send_many([line])[0]


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
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main():
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    applies = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    data = tempfile.mkdtemp(prefix="portico-durability-")
    try:
        proc, addr = start(data)
        t0 = time.time()
        ids = load(addr, sessions)
        print("loaded %d sessions x 10 routes in %.1f s" % (sessions, time.time() - t0))
        proc.terminate(); proc.wait()
        size = os.path.getsize(os.path.join(data, "state.redb"))
        print("store size: %.1f MB (%.0f bytes per route)" % (size / 1e6, size / (sessions * 10)))
        t0 = time.perf_counter()
        proc, addr = start(data)
        while True:
            try:
                reply = Conn(addr).send("RECONNECT|%s" % ids[-1])
                break
            except OSError:
                time.sleep(0.005)
        print("restart to first RECONNECT (%s): %.0f ms" % (reply, (time.perf_counter() - t0) * 1000))
        med, p99 = apply_latency(addr, applies)
        print("CONFIG_APPLY with fsync, %d routes loaded: median %.2f ms, p99 %.2f ms" % (sessions * 10, med, p99))
        proc.terminate(); proc.wait()
        proc, addr = start(data, "--unsafe-no-fsync")
        med, p99 = apply_latency(addr, applies)
        print("CONFIG_APPLY without fsync, %d routes loaded: median %.2f ms, p99 %.2f ms" % (sessions * 10, med, p99))
        proc.terminate(); proc.wait()
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
