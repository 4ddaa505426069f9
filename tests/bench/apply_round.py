#!/usr/bin/env python3
"""Times one REGISTER + ROUTE_ADD + CONFIG_APPLY round on loopback against
release builds of portico-cp and portico-dp, with 1 and then 2 data planes.
Compares nothing; it reports the latency a service sees for its first apply.

Usage: cargo build --release --bins && python3 tests/bench/apply_round.py [rounds]
"""
import os, re, socket, statistics, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release")


def start(args, name):
    proc = subprocess.Popen([os.path.join(BIN, name)] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "RUST_LOG": "info"})
    return proc


def wait_listening(proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        m = re.search(r'listening listener="%s" addr=(\S+)' % what, line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            return host, int(port)
    raise RuntimeError("no %s listener" % what)


def drain(proc):
    """Keeps reading the log so the process never blocks on a full pipe."""
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()


def wait_ready(addr, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            s = socket.create_connection(addr, timeout=1)
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("not ready")


def run(planes, rounds):
    procs = []
    try:
        cp = start(["--registry-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                    "--admin-listen", "127.0.0.1:0", "--data-dir", "/tmp/portico-bench"], "portico-cp")
        procs.append(cp)
        registry = wait_listening(cp, "registry")
        grpc = wait_listening(cp, "grpc")
        drain(cp)
        for i in range(planes):
            dp = start(["--control-plane", "http://%s:%d" % grpc, "--listen", "127.0.0.1:0",
                        "--admin-listen", "127.0.0.1:0", "--node-id", "bench-%d" % i, "--threads", "1"], "portico-dp")
            procs.append(dp)
            wait_listening(dp, "proxy")
            admin = wait_listening(dp, "admin")
            drain(dp)
            wait_ready(admin)
        times = []
        for n in range(rounds):
            s = socket.create_connection(registry)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = s.makefile("rw", newline="\n")
            t0 = time.perf_counter()
            f.write("REGISTER|bench|i%d|0|{}\n" % n); f.flush()
            sess = f.readline().strip().split("|", 1)[1]
            f.write("ROUTE_ADD|%s|h%d.bench|/|http://127.0.0.1:9|0\n" % (sess, n)); f.flush()
            assert f.readline().startswith("ROUTE_OK")
            f.write("CONFIG_APPLY|%s\n" % sess); f.flush()
            reply = f.readline().strip()
            assert reply == "OK", reply
            times.append((time.perf_counter() - t0) * 1000)
            s.close()
        times.sort()
        return statistics.median(times), times[int(len(times) * 0.99) - 1]
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for planes in (1, 2):
        median, p99 = run(planes, rounds)
        print("%d data plane(s): REGISTER+ROUTE_ADD+CONFIG_APPLY median %.2f ms, p99 %.2f ms over %d rounds"
              % (planes, median, p99, rounds))
