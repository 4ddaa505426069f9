#!/usr/bin/env python3
"""Two builds of Portico side by side in one run: scenario 1 (keep-alive
throughput, wrk) and scenario 2's fixed rate (p50/p99 at 12,000 req/s, oha),
rounds alternating A B B A so a drift favours neither. Each build runs its
own stack (control plane on the load CPU, one one-worker data plane on the
proxy CPU) in front of the same nginx upstream.

With --tls, scenario 9 instead: HTTPS keep-alive throughput and new TLS
connections per second (`Connection: close`), the same ECDSA P-256 pair.

Usage: python3 tests/bench/compare_builds.py BIN_A BIN_B [--names A,B] [--rounds N] [--secs S] [--tls]
       BIN_A and BIN_B are directories holding portico-cp and portico-dp
       (release builds, e.g. target/release and a worktree's).
"""
import argparse, os, subprocess, sys, tempfile, shutil, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Procs, median, upstream  # noqa: E402
from harness import HOST, Stack, interleaved, oha, wrk  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_a")
    ap.add_argument("bin_b")
    ap.add_argument("--names", default="before,after")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--rate", type=int, default=12_000)
    ap.add_argument("--tls", action="store_true")
    args = ap.parse_args()
    names = args.names.split(",")
    if args.tls:
        return compare_tls(args, names)
    work = tempfile.mkdtemp(prefix="portico-compare-")
    try:
        with Procs() as procs:
            up = "http://127.0.0.1:%d" % upstream(procs, work)
            stacks = {}
            for name, bindir in zip(names, (args.bin_a, args.bin_b)):
                stacks[name] = Stack(procs, work, bindir, name)
                stacks[name].add_routes([HOST], up)
            url = {n: "http://%s:%d/" % s.proxy for n, s in stacks.items()}
            tput = interleaved(args.rounds, names, lambda n: wrk(url[n], args.secs), mirrored=True)
            tail = interleaved(args.rounds, names, lambda n: oha(url[n], args.secs, args.rate),
                               mirrored=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| build | req/s (median of %d) | p50 at %d req/s | p99 at %d req/s | errors |"
          % (args.rounds, args.rate, args.rate))
    print("|---|---|---|---|---|")
    rows = {}
    for n in names:
        rps = median([r["rps"] for r in tput[n]])
        p50 = median([r["p50"] for r in tail[n]])
        p99 = median([r["p99"] for r in tail[n]])
        errors = sum(r["errors"] for r in tput[n] + tail[n])
        rows[n] = (rps, p50, p99)
        print("| %s | %.0f | %.2f ms | %.2f ms | %d |" % (n, rps, p50, p99, errors))
    (a_rps, _, a_p99), (b_rps, _, b_p99) = rows[names[0]], rows[names[1]]
    print("\n%s against %s: throughput %+.1f %%, p99 %+.1f %%"
          % (names[1], names[0], 100 * (b_rps / a_rps - 1), 100 * (b_p99 / a_p99 - 1)))


def compare_tls(args, names):
    work = tempfile.mkdtemp(prefix="portico-compare-tls-")
    try:
        certs = os.path.join(work, "certs")
        os.makedirs(os.path.join(certs, "bench"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "30", "-subj", "/CN=" + HOST, "-addext", "subjectAltName=DNS:" + HOST,
                        "-keyout", os.path.join(certs, "bench", "privkey.pem"),
                        "-out", os.path.join(certs, "bench", "fullchain.pem")], check=True, capture_output=True)
        close = os.path.join(work, "close.lua")
        with open(close, "w") as f:
            f.write('wrk.headers["Host"] = "%s"\nwrk.headers["Connection"] = "close"\n' % HOST)
        with Procs() as procs:
            up = "http://127.0.0.1:%d" % upstream(procs, work)
            url = {}
            for name, bindir in zip(names, (args.bin_a, args.bin_b)):
                # wrk sends no SNI to an address: the default certificate answers.
                stack = Stack(procs, work, bindir, name, cp_args=("--cert-dir", certs),
                              dp_args=("--listen-tls", "127.0.0.1:0", "--default-cert", HOST))
                stack.add_routes([HOST], up)
                url[name] = "https://127.0.0.1:%d/" % stack.dps[0][1]["tls"][1]
                deadline = time.time() + 20
                while subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                      "Host: " + HOST, url[name]], capture_output=True, text=True).stdout != "200":
                    if time.time() > deadline:
                        raise RuntimeError("%s never answered 200 over TLS" % url[name])
                    time.sleep(0.1)
            keepalive = interleaved(args.rounds, names, lambda n: wrk(url[n], args.secs), mirrored=True)
            handshakes = interleaved(args.rounds, names, lambda n: wrk(url[n], args.secs, script=close),
                                     mirrored=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| build | HTTPS keep-alive req/s | new TLS connections/s | errors |")
    print("|---|---|---|---|")
    for n in names:
        errors = sum(r["errors"] for r in keepalive[n] + handshakes[n])
        print("| %s | %.0f | %.0f | %d |" % (n, median([r["rps"] for r in keepalive[n]]),
                                              median([r["rps"] for r in handshakes[n]]), errors))


if __name__ == "__main__":
    main()
