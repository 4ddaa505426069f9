"""Scenario 10 of tests/bench/run.sh: the control plane on etcd (three
replicas, docs/HA.md) against the embedded store (one control plane): the
apply round trip, propagation to 4 data planes with 10,000 routes loaded,
and 1,000 sessions of 10 routes. A real etcd (Debian's etcd-server) runs on
loopback with its data in the run's work directory."""
import asyncio, json, resource, subprocess, tempfile, time

from benchlib import Conn, free_port, median, percentile, request, spawn_portico, wait_status


def start_etcd(procs, work):
    """A one-member etcd on loopback; returns its client url."""
    client, peer = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="etcd-", dir=work)
    procs.start(["etcd", "--name", "bench", "--data-dir", data,
                 "--listen-client-urls", "http://127.0.0.1:%d" % client,
                 "--advertise-client-urls", "http://127.0.0.1:%d" % client,
                 "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
                 "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
                 "--initial-cluster", "bench=http://127.0.0.1:%d" % peer],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_status(("127.0.0.1", client), "localhost", 200, path="/health")
    return "http://127.0.0.1:%d" % client


def control_planes(procs, work, bindir, store, extra=()):
    """One control plane (embedded) or three replicas on one etcd prefix;
    returns their addresses."""
    if store == "embedded":
        count, args = 1, []
    else:
        count, args = 3, ["--store", "etcd", "--etcd-endpoints", start_etcd(procs, work), "--etcd-prefix", "/bench"]
    planes = []
    for i in range(count):
        data = tempfile.mkdtemp(prefix="cp-%s-%d-" % (store, i), dir=work)
        _, addrs = spawn_portico(procs, bindir, "portico-cp", [
            "--registry-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--data-dir", data, *args, *extra])
        planes.append(addrs)
    return planes


def data_planes(procs, bindir, cps, count, name):
    """`count` data planes spread over the replicas, each knowing all of them."""
    urls = ["http://%s:%d" % cp["grpc"] for cp in cps]
    out = []
    for i in range(count):
        mine = urls[i % len(urls):] + urls[:i % len(urls)]
        _, addrs = spawn_portico(procs, bindir, "portico-dp", [
            "--control-plane", ",".join(mine), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--node-id", "%s-dp-%d" % (name, i), "--threads", "1"])
        wait_status(addrs["admin"], "admin", 200, path="/ready")
        out.append(addrs)
    # Every replica counts every data plane before the first timed apply.
    time.sleep(1.5 if len(cps) > 1 else 0)
    return out


def load(cp, hosts, backend, per_session=1000):
    """Applies one route per host, in sessions of `per_session` routes."""
    conns = []
    for start in range(0, len(hosts), per_session):
        conn = Conn(cp["registry"])
        sid = conn.register("bulk", "bulk-%d" % start)
        chunk = hosts[start:start + per_session]
        lines = ["ROUTE_ADD_BULK|%s|%s" % (sid, json.dumps(
            [{"domains": [h], "path": "/", "backend_url": backend} for h in chunk[i:i + 100]]))
            for i in range(0, len(chunk), 100)]
        replies = conn.send_many(lines + ["CONFIG_APPLY|" + sid])
        assert replies[-1] == "OK", replies[-1]
        conns.append(conn)
    return conns


def apply_round(cp, rounds, backend):
    """REGISTER + ROUTE_ADD + CONFIG_APPLY on a new connection, each round."""
    times = []
    for n in range(rounds):
        t0 = time.perf_counter()
        c = Conn(cp["registry"])
        sid = c.register("round", "r%d" % n)
        replies = c.send_many(["ROUTE_ADD|%s|r%d.round.test|/|%s|0" % (sid, n, backend), "CONFIG_APPLY|" + sid])
        assert replies[0].startswith("ROUTE_OK") and replies[1] == "OK", replies
        times.append((time.perf_counter() - t0) * 1000)
        c.close()
    return times


def propagation(cp, dps, applies, backend):
    """ms from CONFIG_APPLY to the new route answering 200 on every data plane."""
    conn = Conn(cp["registry"])
    sid = conn.register("prop", "prop-1")
    served = []
    for n in range(applies):
        host = "p%d.prop.test" % n
        assert conn.send("ROUTE_ADD|%s|%s|/|%s|0" % (sid, host, backend)).startswith("ROUTE_OK")
        t0 = time.perf_counter()
        assert conn.send("CONFIG_APPLY|" + sid) == "OK"
        for addrs in dps:
            status = request(addrs["proxy"], host)
            assert status == 200, "route %s answered %d right after OK" % (host, status)
        served.append((time.perf_counter() - t0) * 1000)
    return served


async def _session(addr, i, backend):
    reader, writer = await asyncio.open_connection(*addr)

    async def send(line):
        writer.write((line + "\n").encode())
        return (await reader.readline()).decode().rstrip("\n")
    sid = (await send("REGISTER|hasess|s-%d|0|{}" % i)).split("|", 1)[1]
    for k in range(10):
        assert (await send("ROUTE_ADD|%s|s%d-r%d.ha.test|/|%s|0" % (sid, i, k, backend))).startswith("ROUTE_OK")
    assert await send("CONFIG_APPLY|" + sid) == "OK"
    writer.close()


def sessions(cps, count, backend):
    """`count` sessions of 10 routes at once, spread over the replicas; seconds."""
    async def all_of():
        await asyncio.gather(*[_session(cps[i % len(cps)]["registry"], i, backend) for i in range(count)])
    t0 = time.perf_counter()
    asyncio.run(all_of())
    return time.perf_counter() - t0


def run(procs_factory, work, bindir, p, upstream, log):
    # `upstream` is the backend url every route points at.
    """{store: {round_p50, round_p99, prop_p50, prop_p99, sessions_s}}."""
    backend = upstream
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    out = {}
    for store in ("embedded", "etcd"):
        rows = []
        for r in range(p["rounds"]):
            with procs_factory() as procs:
                extra = ["--max-connections-per-ip", str(p["sessions"] + 100)]
                cps = control_planes(procs, work, bindir, store, extra)
                dps = data_planes(procs, bindir, cps, 4, "ha-%s" % store)
                rounds = apply_round(cps[0], p["applies"], backend)
                keep = load(cps[0], ["h%d.ha.test" % i for i in range(p["prop_routes"])], backend)
                served = propagation(cps[0], dps, p["applies"], backend)
                took = sessions(cps, p["sessions"], backend)
                for c in keep:
                    c.close()
            rows.append({"round_p50": median(rounds), "round_p99": percentile(rounds, 0.99),
                         "prop_p50": median(served), "prop_p99": percentile(served, 0.99), "sessions_s": took})
            log("  %s, round %d: %s" % (store, r + 1, ", ".join("%s %.2f" % kv for kv in rows[-1].items())))
        out[store] = {k: median([row[k] for row in rows]) for k in rows[0]}
    return out
