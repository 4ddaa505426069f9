//! Backends by name: the data plane follows a real (mock) DNS server on
//! loopback, looked up in the background, never on the request path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_e2e::dns::MockDns;
use portico_e2e::{json_after, wait_for, ControlPlane, DataPlane, FakeBackend, Session};
use serde_json::Value;

const REFRESH: Duration = Duration::from_secs(2);

struct Setup {
    dns: MockDns,
    cp: ControlPlane,
    dp: DataPlane,
}

fn setup(extra: &[&str]) -> Setup {
    let dns = MockDns::start();
    let cp = ControlPlane::start();
    let resolver = dns.addr.to_string();
    let mut args = vec!["--resolver", &resolver, "--dns-refresh", "2s"];
    args.extend_from_slice(extra);
    let dp = DataPlane::spawn(&cp.grpc_url(), "dp-dns", &args);
    dp.wait_ready();
    Setup { dns, cp, dp }
}

/// The route's backend resolution as `/config` shows it.
fn resolution(dp: &DataPlane, route_id: &str) -> Value {
    let config = dp.config();
    config["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["route_id"] == route_id))
        .map(|r| r["backend_resolution"].clone())
        .unwrap_or(Value::Null)
}

fn addresses(dp: &DataPlane, route_id: &str) -> Vec<String> {
    resolution(dp, route_id)["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_name_that_appears_after_ok_is_served_within_the_refresh() {
    let s = setup(&[]);
    let backend = FakeBackend::start("late");
    let mut session = Session::register(s.cp.registry, "late", "late-1");
    let url = format!("http://late.portico.test:{}", backend.addr.port());
    let r = session.add_route("late.test", "/", &url);
    session.apply();
    let first = s.dp.get("late.test", "/");
    assert_eq!(first.status, 502, "{}", first.body);
    let res = resolution(&s.dp, &r);
    assert!(
        res["error"].as_str().unwrap_or("").contains("no address"),
        "{res}"
    );

    s.dns.set_a("late.portico.test", &["127.0.0.1"]);
    let added = Instant::now();
    wait_for(
        "the late name served",
        REFRESH + Duration::from_secs(1),
        || (s.dp.get("late.test", "/").status == 200).then_some(()),
    );
    eprintln!("DNS change to first request served: {:?}", added.elapsed());
    assert_eq!(backend.hits_for("/"), 1, "one request went through");
    let res = resolution(&s.dp, &r);
    assert_eq!(addresses(&s.dp, &r), vec![backend.addr.to_string()]);
    assert!(res["resolved_at"].is_string(), "{res}");
    assert!(res["error"].is_null(), "{res}");
}

#[test]
fn a_name_that_moves_takes_the_traffic_along_without_a_failure() {
    let s = setup(&[]);
    let a = FakeBackend::start_on("a", "127.0.0.2:0");
    let port = a.addr.port();
    let b = FakeBackend::start_on("b", &format!("127.0.0.3:{port}"));
    s.dns.set_a("moving.portico.test", &["127.0.0.2"]);
    let mut session = Session::register(s.cp.registry, "moving", "moving-1");
    session.add_route(
        "moving.test",
        "/",
        &format!("http://moving.portico.test:{port}"),
    );
    session.apply();
    assert_eq!(
        s.dp.get("moving.test", "/").body,
        "a",
        "served at once after OK"
    );

    // A steady stream of requests across the move.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let proxy = s.dp.proxy;
    let stream = {
        let (stop, failures, sent) = (stop.clone(), failures.clone(), sent.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let ok =
                    portico_e2e::http_get(proxy, "moving.test", "/").is_ok_and(|r| r.status == 200);
                sent.fetch_add(1, Ordering::AcqRel);
                if !ok {
                    failures.fetch_add(1, Ordering::AcqRel);
                }
            }
        })
    };
    wait_for("requests flowing", Duration::from_secs(5), || {
        (sent.load(Ordering::Acquire) > 20).then_some(())
    });
    s.dns.set_a("moving.portico.test", &["127.0.0.3"]);
    let moved = Instant::now();
    let b_before = b.hits();
    wait_for(
        "traffic at the new address",
        REFRESH + Duration::from_secs(1),
        || (b.hits() > b_before).then_some(()),
    );
    eprintln!(
        "DNS change to first request at the new address: {:?}",
        moved.elapsed()
    );
    // Keep the stream going a little past the move, then stop it.
    let after = sent.load(Ordering::Acquire) + 20;
    wait_for("requests after the move", Duration::from_secs(5), || {
        (sent.load(Ordering::Acquire) > after).then_some(())
    });
    stop.store(true, Ordering::Release);
    stream.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Acquire),
        0,
        "of {} requests",
        sent.load(Ordering::Acquire)
    );
    let a_now = a.hits();
    for _ in 0..5 {
        assert_eq!(s.dp.get("moving.test", "/").body, "b");
    }
    assert_eq!(a.hits(), a_now, "the old address gets nothing more");
}

#[test]
fn a_name_that_disappears_is_served_from_its_last_addresses_for_the_grace() {
    let grace = Duration::from_secs(6);
    let s = setup(&["--dns-stale-grace", "6s"]);
    let backend = FakeBackend::start("kept");
    s.dns.set_a("gone.portico.test", &["127.0.0.1"]);
    let mut session = Session::register(s.cp.registry, "gone", "gone-1");
    let url = format!("http://gone.portico.test:{}", backend.addr.port());
    let r = session.add_route("gone.test", "/", &url);
    assert_eq!(
        session.cmd("HEALTH_SET", &format!("{r}|/health|1s|500ms")),
        "HEALTH_OK"
    );
    session.apply();
    assert_eq!(s.dp.get("gone.test", "/").status, 200);
    assert_eq!(
        session.cmd("SUBSCRIBE", "backend_health_changed"),
        "SUBSCRIBE_OK"
    );

    s.dns.clear_a("gone.portico.test");
    let cleared = Instant::now();
    wait_for("the failed lookup seen", Duration::from_secs(5), || {
        (resolution(&s.dp, &r)["stale"] == true).then_some(())
    });
    let res = resolution(&s.dp, &r);
    assert!(
        res["error"].as_str().unwrap_or("").contains("no address"),
        "{res}"
    );
    assert_eq!(addresses(&s.dp, &r), vec![backend.addr.to_string()]);
    assert_eq!(
        s.dp.get("gone.test", "/").status,
        200,
        "served from the last addresses"
    );
    assert!(s.dp.proc.log_contains("serving its last addresses"));

    // After the grace (counted from the last good answer, at most one
    // refresh of a 0 s TTL before the clear) the addresses go.
    wait_for(
        "the addresses dropped",
        grace + Duration::from_secs(10),
        || (s.dp.get("gone.test", "/").status == 502).then_some(()),
    );
    let after = cleared.elapsed();
    assert!(
        after >= grace - Duration::from_secs(1),
        "dropped after {after:?}"
    );
    assert!(addresses(&s.dp, &r).is_empty());
    // The route's health says why (the next probe, within a second).
    let event = session.client.read_line();
    let payload = json_after(
        event.strip_prefix("EVENT|").unwrap_or(&event),
        "backend_health_changed",
    );
    assert_eq!(payload["route_id"], r.as_str());
    assert_eq!(payload["healthy"], false);
    let reason = payload["reason"].as_str().unwrap_or("");
    assert!(reason.starts_with("name does not resolve: "), "{reason}");

    // And it comes back as soon as it resolves again.
    s.dns.set_a("gone.portico.test", &["127.0.0.1"]);
    wait_for("the name back", REFRESH + Duration::from_secs(1), || {
        (s.dp.get("gone.test", "/").status == 200).then_some(())
    });
}

#[test]
fn a_name_with_two_addresses_spreads_traffic_and_the_probe_ejects_only_the_dead_one() {
    let s = setup(&[]);
    let a = FakeBackend::start_on("a", "127.0.0.2:0");
    let port = a.addr.port();
    let b = FakeBackend::start_on("b", &format!("127.0.0.3:{port}"));
    s.dns
        .set_a("pair.portico.test", &["127.0.0.2", "127.0.0.3"]);
    let mut session = Session::register(s.cp.registry, "pair", "pair-1");
    let r = session.add_route(
        "pair.test",
        "/",
        &format!("http://pair.portico.test:{port}"),
    );
    assert_eq!(
        session.cmd("HEALTH_SET", &format!("{r}|/health|1s|500ms")),
        "HEALTH_OK"
    );
    session.apply();
    for _ in 0..20 {
        assert_eq!(s.dp.get("pair.test", "/x").status, 200);
    }
    assert_eq!(
        (a.hits_for("/x"), b.hits_for("/x")),
        (10, 10),
        "round-robin over both"
    );

    // Both addresses are probed, each on its own.
    wait_for("both addresses probed", Duration::from_secs(5), || {
        (a.hits_for("/health") > 0 && b.hits_for("/health") > 0).then_some(())
    });
    b.stop();
    let healthy = |addr: &str| {
        resolution(&s.dp, &r)["addresses"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["address"] == addr))
            .and_then(|e| e["healthy"].as_bool())
    };
    let b_addr = format!("127.0.0.3:{port}");
    let a_addr = format!("127.0.0.2:{port}");
    wait_for("b's address ejected", Duration::from_secs(5), || {
        (healthy(&b_addr) == Some(false)).then_some(())
    });
    assert_eq!(healthy(&a_addr), Some(true), "only the dead address goes");
    let a_before = a.hits_for("/x");
    for _ in 0..10 {
        let reply = s.dp.get("pair.test", "/x");
        assert_eq!((reply.status, reply.body.as_str()), (200, "a"));
    }
    assert_eq!(a.hits_for("/x"), a_before + 10);
}

#[test]
fn no_request_waits_on_dns() {
    let mut s = setup(&[]);
    let backend = FakeBackend::start("steady");
    s.dns.set_a("steady.portico.test", &["127.0.0.1"]);
    let mut session = Session::register(s.cp.registry, "steady", "steady-1");
    let url = format!("http://steady.portico.test:{}", backend.addr.port());
    let r = session.add_route("steady.test", "/", &url);
    session.apply();
    let timed = |dp: &DataPlane| {
        let mut took: Vec<Duration> = (0..20)
            .map(|_| {
                let started = Instant::now();
                assert_eq!(dp.get("steady.test", "/").status, 200);
                started.elapsed()
            })
            .collect();
        took.sort();
        took
    };
    let before = timed(&s.dp);

    // The DNS server goes away: lookups fail (and would time out after 2 s
    // per attempt); requests keep their addresses and their speed.
    s.dns.stop();
    let stopped = Instant::now();
    wait_for("a failed lookup", Duration::from_secs(30), || {
        resolution(&s.dp, &r)["error"].is_string().then_some(())
    });
    eprintln!("first failed lookup seen after {:?}", stopped.elapsed());
    let after = timed(&s.dp);
    eprintln!(
        "median request with DNS up {:?}, down {:?}; slowest down {:?}",
        before[10], after[10], after[19]
    );
    assert!(
        after[19] < Duration::from_secs(1),
        "a request waited on DNS: {after:?}"
    );
}
