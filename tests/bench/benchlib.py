"""Shared pieces of the bench scripts: starting Portico's binaries on loopback
with ephemeral ports, a line-protocol client, one-shot HTTP requests, process
clean-up and the small statistics the tables need."""
import os, re, shutil, socket, statistics, subprocess, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Procs:
    """Every process a run starts; all are killed on exit, even on failure."""

    def __init__(self):
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill_all()

    def kill_all(self):
        # SIGTERM first: nginx's master only takes its workers down with it
        # when it is asked, not when it is killed.
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 3
        for p in self.procs:
            try:
                p.wait(max(0.01, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def start(self, argv, pin=None, **kw):
        if pin is not None and shutil.which("taskset") and (os.cpu_count() or 1) > pin:
            argv = ["taskset", "-c", str(pin)] + argv
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p


def _drain(proc):
    """Keeps reading a log so the process never blocks on a full pipe."""
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx(procs, work, name, http, connections=8192):
    """An nginx of one worker with `http` as its http block's body; returns its master."""
    path = os.path.join(work, name + ".conf")
    with open(path, "w") as f:
        f.write("worker_processes 1; daemon off; pid %s/%s.pid; error_log %s/%s.err;\n"
                "worker_rlimit_nofile %d;\nevents { worker_connections %d; }\n"
                "http { access_log off; %s }\n"
                % (work, name, work, name, 2 * connections, connections, http))
    return procs.start(["nginx", "-p", work, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def upstream(procs, work, name="upstream"):
    """An nginx answering 200 "ok" on every path; returns its port."""
    port = free_port()
    nginx(procs, work, name, 'server { listen 127.0.0.1:%d; location / { return 200 "ok\\n"; } }' % port)
    return port


def route_to(cp_addrs, host, port):
    """Registers a session with one route of `host` to 127.0.0.1:`port`, applied; returns its connection."""
    c = Conn(cp_addrs["registry"])
    sid = c.register("bench", "bench-1")
    assert c.send("ROUTE_ADD|%s|%s|/|http://127.0.0.1:%d|0" % (sid, host, port)).startswith("ROUTE_OK")
    assert c.send("CONFIG_APPLY|" + sid) == "OK"
    return c


def spawn_portico(procs, bindir, name, args, pin=None, timeout=30):
    """Starts portico-cp or portico-dp and returns (process, {listener: addr})
    read from its 'listening' log lines."""
    want = 3 if name == "portico-cp" else 2 + ("--listen-tls" in args)
    p = procs.start([os.path.join(bindir, name)] + args, pin=pin, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True,
                    env={**os.environ, "RUST_LOG": "warn,portico_cp=info,portico_dp=info"})
    addrs, deadline = {}, time.time() + timeout
    while len(addrs) < want:
        line = p.stdout.readline()
        if not line or time.time() > deadline:
            raise RuntimeError("%s exited or did not listen in time" % name)
        m = re.search(r'listening listener="(\w+)" addr=(\S+)', line)
        if m:
            host, port = m.group(2).rsplit(":", 1)
            addrs[m.group(1)] = (host, int(port))
    _drain(p)
    return p, addrs


def start_control_plane(procs, bindir, data_dir, pin=None, extra=()):
    return spawn_portico(procs, bindir, "portico-cp", [
        "--registry-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--data-dir", data_dir, *extra], pin=pin)


def start_data_plane(procs, bindir, cp_addrs, name, pin=None, threads=1, extra=()):
    p, addrs = spawn_portico(procs, bindir, "portico-dp", [
        "--control-plane", "http://%s:%d" % cp_addrs["grpc"], "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--node-id", name, "--threads", str(threads), *extra], pin=pin)
    wait_status(addrs["admin"], "admin", 200, path="/ready")
    return p, addrs


def request(addr, host, path="/", timeout=5):
    """One HTTP/1.1 GET on a new connection; returns the status code."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 else 0


def wait_status(addr, host, want, path="/", timeout=20, every=0.02):
    """Polls with a new connection every `every` seconds until `host` answers `want`."""
    deadline = time.time() + timeout
    while True:
        try:
            if request(addr, host, path) == want:
                return
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError("%s:%d never answered %d for %s%s" % (addr + (want, host, path)))
        time.sleep(every)


class Conn:
    """A registry connection speaking the line protocol."""

    def __init__(self, addr):
        self.s = socket.create_connection(addr)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rw", newline="\n")
        self.lock = threading.Lock()

    def send_many(self, lines):
        with self.lock:
            self.f.write("".join(l + "\n" for l in lines))
            self.f.flush()
            return [self.f.readline().rstrip("\n") for _ in lines]

    def send(self, line):
        return self.send_many([line])[0]

    def register(self, service, instance):
        reply = self.send("REGISTER|%s|%s|0|{}" % (service, instance))
        assert reply.startswith("ACK|"), reply
        return reply.split("|", 1)[1]

    def keep_alive(self, sid, every=60.0):
        """PINGs in the background: the control plane closes connections idle
        for 5 minutes, and a session without its connection expires."""
        def ping():
            while True:
                time.sleep(every)
                try:
                    self.send("PING|" + sid)
                except (OSError, ValueError):
                    return
        threading.Thread(target=ping, daemon=True).start()

    def close(self):
        self.s.close()


def tree(pid):
    """The process and its descendants (nginx's worker is its master's child)."""
    out = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            for child in f.read().split():
                out += tree(int(child))
    except OSError:
        pass
    return out


def proc_counters(pid):
    """Minor faults, major faults, user and system CPU seconds of a process tree."""
    total = [0, 0, 0.0, 0.0]
    tick = os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        with open("/proc/%d/stat" % p) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total[0] += int(fields[7])
        total[1] += int(fields[9])
        total[2] += int(fields[11]) / tick
        total[3] += int(fields[12]) / tick
    return total


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS for %d" % pid)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(len(xs) * q)) - 1))] if xs else float("nan")
