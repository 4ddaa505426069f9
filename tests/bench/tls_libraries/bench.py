"""HTTPS keep-alive and new-connection rates through the bare TLS proxy
built with each library (run.sh builds them): wrk -t1 -c64, 3 x 5 s rounds
interleaved, the proxy on CPU 0 and wrk on CPU 1, medians."""
import os, subprocess, sys, tempfile, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import Procs, free_port, median, upstream
from harness import HOST, PROXY_CPU, interleaved, wrk
work = tempfile.mkdtemp(prefix="tlsb-")
cert, key = os.path.join(work, "c.pem"), os.path.join(work, "k.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
                "-subj", "/CN=" + HOST, "-addext", "subjectAltName=DNS:" + HOST, "-keyout", key, "-out", cert],
               check=True, capture_output=True)
names = ["openssl-vendored", "openssl-system", "boringssl", "rustls"]
close = os.path.join(work, "close.lua")
open(close, "w").write('wrk.headers["Host"] = "%s"\nwrk.headers["Connection"] = "close"\n' % HOST)
with Procs() as procs:
    up = upstream(procs, work)
    urls = {}
    for n in names:
        port = free_port()
        procs.start([os.path.join(HERE, "target-%s" % n, "release", "tlsbench"), "127.0.0.1:%d" % port, cert, key, "127.0.0.1:%d" % up],
                    pin=PROXY_CPU, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        urls[n] = "https://127.0.0.1:%d/" % port
    for n, u in urls.items():
        deadline = time.time() + 20
        while subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", u], capture_output=True, text=True).stdout != "200":
            assert time.time() < deadline, n
            time.sleep(0.1)
    ka = interleaved(3, names, lambda n: wrk(urls[n], 5), mirrored=True)
    hs = interleaved(3, names, lambda n: wrk(urls[n], 5, script=close), mirrored=True)
print("| library | keep-alive req/s | new TLS connections/s | errors |")
print("|---|---|---|---|")
for n in names:
    print("| %s | %.0f | %.0f | %d |" % (n, median([r["rps"] for r in ka[n]]), median([r["rps"] for r in hs[n]]),
                                          sum(r["errors"] for r in ka[n] + hs[n])))
