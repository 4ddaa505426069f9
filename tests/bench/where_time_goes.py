#!/usr/bin/env python3
"""Where a proxy's time goes, for docs/BENCHMARKS.md: each proxy of the
harness (one worker on CPU 0, upstream and load on CPU 1) under the same
open-loop load (oha at a fixed rate), with

- its CPU per request, split user and kernel (from /proc/PID/stat: this VM
  has no hardware counters for `perf stat -e cycles`);
- its page faults, minor and major, per second;
- its calls to the allocator per request, counted by uprobes at a low rate
  (mimalloc for Portico and bare Pingora, glibc's malloc family for nginx
  and HAProxy; Caddy's Go allocator has no such entry point);
- for Portico, the latency it measures itself (from reading the request
  head to logging, `portico_request_duration_seconds`) against the client's.

Rounds run mirrored (A B C C B A ...); the figures are medians. Needs root
and perf (Debian: linux-perf) for the uprobes, and the tools run.sh installs.
Usage: cargo build --release --workspace --bins && cargo build --release --workspace --examples
       python3 tests/bench/where_time_goes.py [seconds] [rounds] [rate]
"""
import os, re, subprocess, sys, tempfile, shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, Procs, median, proc_counters, tree  # noqa: E402
from harness import HOST, Rig, interleaved, log, oha, sh  # noqa: E402

NAMES = ["portico", "portico_proxy", "core", "pingora", "nginx", "haproxy", "caddy"]
ALLOC_RATE, ALLOC_SECS = 2000, 5
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
MI = ["mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned"]
GLIBC = ["malloc", "calloc", "realloc", "posix_memalign"]


def vm_majfaults():
    with open("/proc/vmstat") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("pgmajfault "))


def histogram(text):
    """Portico's request-duration buckets summed over routes: {upper bound s: cumulative count}."""
    out = {}
    for m in re.finditer(r'^portico_request_duration_seconds_bucket\{[^}]*le="([^"]+)"\} (\d+)$', text, re.M):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        out[le] = out.get(le, 0) + int(m.group(2))
    return out


def quantile(before, after, q):
    """The upper bound of the bucket the q-quantile falls in, in ms."""
    diff = {le: after[le] - before.get(le, 0) for le in after}
    total = diff[float("inf")]
    for le in sorted(diff):
        if diff[le] >= q * total:
            return le * 1000
    return float("inf")


def metrics(rig):
    import urllib.request
    host, port = rig.stack.dps[0][1]["admin"]
    with urllib.request.urlopen("http://%s:%d/metrics" % (host, port), timeout=10) as r:
        return r.read().decode()


def loaded(rig, name, secs, rate):
    pid = rig.pids[name]
    hist = histogram(metrics(rig)) if name == "portico" else None
    c0, vm0 = proc_counters(pid), vm_majfaults()
    r = oha(rig.url(name), secs, rate, host=HOST)
    c1, vm1 = proc_counters(pid), vm_majfaults()
    n = max(r["requests"], 1)
    row = {"rps": r["rps"], "user_us": (c1[2] - c0[2]) / n * 1e6, "sys_us": (c1[3] - c0[3]) / n * 1e6,
           "minflt_s": (c1[0] - c0[0]) / secs, "majflt_s": (c1[1] - c0[1]) / secs,
           "vm_majflt_s": (vm1 - vm0) / secs, "p50": r["p50"], "p99": r["p99"], "p999": r["p999"]}
    if hist is not None:
        after = histogram(metrics(rig))
        row["in_p50"], row["in_p99"], row["in_p999"] = (quantile(hist, after, q) for q in (0.5, 0.99, 0.999))
    return row


def add_probes(binary, group, funcs):
    sh(["perf", "probe", "-q", "-d", group + ":*"])  # left by an interrupted run, maybe on an older build
    for f in funcs:
        # Event names are unique across groups, so each carries its group's name.
        out = sh(["perf", "probe", "-q", "-x", binary, "-a", "%s:%s_%s=%s" % (group, group, f, f)])
        if out.returncode != 0:
            raise RuntimeError("perf probe %s in %s: %s" % (f, binary, out.stderr))
    return ["%s:%s_%s" % (group, group, f) for f in funcs]


def allocations(rig, name, events):
    """Allocator calls per request at ALLOC_RATE (uprobes make each call slow)."""
    pids = ",".join(str(p) for p in tree(rig.pids[name]))
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", pids],
                            stderr=subprocess.PIPE, text=True)
    try:
        r = oha(rig.url(name), ALLOC_SECS, ALLOC_RATE, host=HOST)
    finally:
        perf.send_signal(2)
        _, err = perf.communicate(timeout=30)
    calls = sum(int(line.split(",")[0]) for line in err.splitlines() if line.split(",")[0].isdigit())
    return calls / max(r["requests"], 1)


def main():
    if not shutil.which("perf"):
        sys.exit("where_time_goes.py counts allocator calls with perf's uprobes: install perf "
                 "(Debian: linux-perf) and run it as root")
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 12_000
    bindir = os.path.join(ROOT, "target", "release")
    work = tempfile.mkdtemp(prefix="portico-where-")
    try:
        with Procs() as procs:
            rig = Rig(procs, work, bindir)
            log("warm-up")
            for n in NAMES:
                oha(rig.url(n), 2, rate, host=HOST)
            log("%d req/s for %d s, %d mirrored rounds" % (rate, secs, rounds))
            res = interleaved(rounds, NAMES, lambda n: loaded(rig, n, secs, rate), mirrored=True)
            table = {n: {k: median([r[k] for r in rs]) for k in rs[0]} for n, rs in res.items()}
            log("allocator calls per request at %d req/s" % ALLOC_RATE)
            probes = {"portico": add_probes(os.path.join(bindir, "portico-dp"), "wtg_portico", MI),
                      "pingora": add_probes(os.path.join(bindir, "examples", "bare_proxy"), "wtg_pingora", MI),
                      "core": add_probes(os.path.join(bindir, "examples", "bare_core"), "wtg_core", MI),
                      "nginx": add_probes(LIBC, "wtg_libc", GLIBC)}
            probes["haproxy"] = probes["nginx"]
            probes["portico_proxy"] = probes["portico"]
            try:
                for n, events in probes.items():
                    table[n]["allocs"] = allocations(rig, n, events)
                    log("  %s: %.1f" % (n, table[n]["allocs"]))
            finally:
                for group in ("wtg_portico", "wtg_pingora", "wtg_core", "wtg_libc"):
                    sh(["perf", "probe", "-q", "-d", group + ":*"])
        print(report(table, secs, rounds, rate))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(t, secs, rounds, rate):
    L = ["At %s requests/s (oha, open loop, 64 connections), %d s, median of %d mirrored rounds:\n"
         % ("{:,}".format(rate), secs, rounds),
         "| proxy | CPU µs per request (user + kernel) | allocator calls per request | minor / major faults per s "
         "| client p50 / p99 / p99.9 ms |", "|---|---|---|---|---|"]
    for n in NAMES:
        r = t[n]
        allocs = "%.1f" % r["allocs"] if "allocs" in r else "n/a (Go)"
        L.append("| %s | %.1f (%.1f + %.1f) | %s | %.0f / %.1f | %.2f / %.2f / %.2f |" % (
            n, r["user_us"] + r["sys_us"], r["user_us"], r["sys_us"], allocs, r["minflt_s"], r["majflt_s"],
            r["p50"], r["p99"], r["p999"]))
    p = t["portico"]
    L.append("\nPortico's own histogram (`portico_request_duration_seconds`, upper bound of the bucket) "
             "against the client's, same runs:\n")
    L.append("| | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|")
    L.append("| in the proxy (head read to logging) | ≤ %g | ≤ %g | ≤ %g |" % (p["in_p50"], p["in_p99"], p["in_p999"]))
    L.append("| at the client (oha) | %.2f | %.2f | %.2f |" % (p["p50"], p["p99"], p["p999"]))
    L.append("\nMajor faults system-wide during Portico's runs: %.1f per s." % p["vm_majflt_s"])
    return "\n".join(L)


if __name__ == "__main__":
    main()
