//! The walking skeleton end to end: register, stage, apply, proxy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_e2e::*;

fn add_and_apply(
    client: &mut LineClient,
    session: &str,
    host: &str,
    path: &str,
    backend: &str,
) -> String {
    let reply = client.send(&format!("ROUTE_ADD|{session}|{host}|{path}|{backend}|0"));
    let id = reply
        .strip_prefix("ROUTE_OK|")
        .unwrap_or_else(|| panic!("ROUTE_ADD answered {reply}"))
        .to_string();
    assert_eq!(client.send(&format!("CONFIG_APPLY|{session}")), "OK");
    id
}

#[test]
fn register_apply_and_proxy() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("alpha");
    let mut client = LineClient::connect(cp.registry);
    let session = client.register("web", "web-1");
    assert_eq!(dp.get("example.com", "/").status, 404);
    let id = add_and_apply(&mut client, &session, "example.com", "/api", &backend.url());

    let response = dp.get("Example.com:8080", "/api/users");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "alpha");
    let head = backend.last_request.lock().unwrap().clone();
    assert!(
        head.contains("Host: Example.com:8080"),
        "original Host kept: {head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("x-forwarded-for: 127.0.0.1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("x-forwarded-proto: http"),
        "{head}"
    );
    // Segment boundaries: /apiary is not under /api.
    let miss = dp.get("example.com", "/apiary");
    assert_eq!(miss.status, 404);
    assert!(miss.body.contains("no route"), "{}", miss.body);

    let list = client.send(&format!("ROUTE_LIST|{session}"));
    let json: serde_json::Value =
        serde_json::from_str(list.strip_prefix("ROUTE_LIST_OK|").unwrap()).unwrap();
    assert_eq!(json[0]["route_id"], id.as_str());
    assert_eq!(json[0]["status"], "active");
    assert_eq!(json[0]["backend_url"], backend.url().as_str());
}

#[test]
fn instances_of_one_service_share_traffic() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let (a, b) = (FakeBackend::start("a"), FakeBackend::start("b"));
    let mut one = LineClient::connect(cp.registry);
    let mut two = LineClient::connect(cp.registry);
    let s1 = one.register("shop", "shop-1");
    let s2 = two.register("shop", "shop-2");
    add_and_apply(&mut one, &s1, "shop.test", "/", &a.url());
    add_and_apply(&mut two, &s2, "shop.test", "/", &b.url());
    for _ in 0..10 {
        assert_eq!(dp.get("shop.test", "/w").status, 200);
    }
    assert_eq!(
        (a.hits_for("/w"), b.hits_for("/w")),
        (5, 5),
        "round-robin over the pool"
    );
}

#[test]
fn another_service_cannot_take_a_host_and_path() {
    let cp = ControlPlane::start();
    let backend = FakeBackend::start("x");
    let mut billing = LineClient::connect(cp.registry);
    let mut shop = LineClient::connect(cp.registry);
    let s1 = billing.register("billing", "b-1");
    let s2 = shop.register("shop", "s-1");
    add_and_apply(&mut billing, &s1, "api.example.com", "/v1", &backend.url());
    let id = shop.send(&format!(
        "ROUTE_ADD|{s2}|api.example.com|/v1|{}|0",
        backend.url()
    ));
    let id = id.strip_prefix("ROUTE_OK|").unwrap();
    let expected = format!("ERROR|route {id}: api.example.com/v1 is owned by service billing");
    assert_eq!(shop.send(&format!("CONFIG_VALIDATE|{s2}")), expected);
    assert_eq!(shop.send(&format!("CONFIG_APPLY|{s2}")), expected);
    // Nothing changed: the route is still staged, not active.
    let list = shop.send(&format!("ROUTE_LIST|{s2}"));
    assert!(list.contains("\"status\":\"staged\""), "{list}");
}

#[test]
fn remove_shutdown_and_grace() {
    let cp = ControlPlane::start_with(&["--session-grace", "2s"]);
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("svc");
    let mut client = LineClient::connect(cp.registry);
    let session = client.register("svc", "svc-1");

    let id = add_and_apply(&mut client, &session, "gone.test", "/", &backend.url());
    assert_eq!(dp.get("gone.test", "/").status, 200);
    assert_eq!(
        client.send(&format!("ROUTE_REMOVE|{session}|{id}")),
        "ROUTE_OK"
    );
    assert_eq!(
        dp.get("gone.test", "/").status,
        200,
        "staged removal is not live yet"
    );
    assert_eq!(client.send(&format!("CONFIG_APPLY|{session}")), "OK");
    assert_eq!(dp.get("gone.test", "/").status, 404);
    assert_eq!(
        client.send(&format!("ROUTE_REMOVE|{session}|{id}")),
        "ERROR|route not found"
    );

    add_and_apply(&mut client, &session, "bye.test", "/", &backend.url());
    assert_eq!(dp.get("bye.test", "/").status, 200);
    assert_eq!(
        client.send(&format!("CLIENT_SHUTDOWN|{session}")),
        "SHUTDOWN_OK"
    );
    assert!(client.is_closed(), "CLIENT_SHUTDOWN closes the connection");
    assert_eq!(dp.get("bye.test", "/").status, 404, "routes gone at once");
    assert_eq!(
        one_shot(cp.registry, &format!("PING|{session}")),
        "ERROR|invalid session"
    );

    // Grace: the home connection closes, the routes keep serving, then go.
    let mut client = LineClient::connect(cp.registry);
    let session = client.register("svc", "svc-2");
    add_and_apply(&mut client, &session, "grace.test", "/", &backend.url());
    drop(client);
    let closed = Instant::now();
    assert_eq!(dp.get("grace.test", "/").status, 200);
    assert_eq!(
        one_shot(cp.registry, &format!("PING|{session}")),
        "PONG",
        "alive during grace"
    );
    wait_for("grace expiry", Duration::from_secs(15), || {
        (dp.get("grace.test", "/").status == 404).then_some(())
    });
    assert!(
        closed.elapsed() >= Duration::from_millis(1900),
        "expired early: {:?}",
        closed.elapsed()
    );
    assert_eq!(
        one_shot(cp.registry, &format!("PING|{session}")),
        "ERROR|invalid session"
    );
}

#[test]
fn nc_style_one_connection_per_command() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("nc");
    let ack = one_shot(cp.registry, "REGISTER|test|inst1|9000|{}");
    let session = ack.strip_prefix("ACK|").unwrap().to_string();
    assert!(
        session.starts_with("inst1-") && session.len() >= "inst1-".len() + 32,
        "{session}"
    );
    let added = one_shot(
        cp.registry,
        &format!("ROUTE_ADD|{session}|nc.test|/api|{}|10", backend.url()),
    );
    assert!(added.starts_with("ROUTE_OK|r"), "{added}");
    assert_eq!(
        one_shot(cp.registry, &format!("CONFIG_APPLY|{session}")),
        "OK"
    );
    assert_eq!(dp.get("nc.test", "/api").body, "nc");
    assert_eq!(one_shot(cp.registry, &format!("RECONNECT|{session}")), "OK");
    assert_eq!(one_shot(cp.registry, "RECONNECT|nobody-0000"), "REREGISTER");
}

/// Moves two routes together to a new backend generation in one apply, while
/// readers request them in pairs: the second of a pair must never be on an
/// older generation than the first, and neither may ever be missing.
#[test]
fn an_apply_is_atomic_across_routes() {
    const GENERATIONS: usize = 12;
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backends: Vec<FakeBackend> = (0..GENERATIONS)
        .map(|g| FakeBackend::start(&g.to_string()))
        .collect();
    let mut client = LineClient::connect(cp.registry);
    let session = client.register("pair", "pair-1");
    let mut ids = [
        add_and_apply(&mut client, &session, "left.test", "/", &backends[0].url()),
        add_and_apply(&mut client, &session, "right.test", "/", &backends[0].url()),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (stop, proxy) = (stop.clone(), dp.proxy);
            std::thread::spawn(move || {
                let hosts = if reader == 0 {
                    ["left.test", "right.test"]
                } else {
                    ["right.test", "left.test"]
                };
                let mut pairs = 0;
                while !stop.load(Ordering::Acquire) {
                    let first = http_get(proxy, hosts[0], "/").unwrap();
                    let second = http_get(proxy, hosts[1], "/").unwrap();
                    assert_eq!(
                        (first.status, second.status),
                        (200, 200),
                        "a route was missing mid-apply"
                    );
                    let (a, b): (usize, usize) =
                        (first.body.parse().unwrap(), second.body.parse().unwrap());
                    assert!(
                        b >= a,
                        "{} on generation {a} but {} then on {b}",
                        hosts[0],
                        hosts[1]
                    );
                    pairs += 1;
                }
                pairs
            })
        })
        .collect();
    for backend in &backends[1..] {
        for id in &ids {
            assert_eq!(
                client.send(&format!("ROUTE_REMOVE|{session}|{id}")),
                "ROUTE_OK"
            );
        }
        for (slot, host) in ["left.test", "right.test"].iter().enumerate() {
            let reply = client.send(&format!("ROUTE_ADD|{session}|{host}|/|{}|0", backend.url()));
            ids[slot] = reply.strip_prefix("ROUTE_OK|").unwrap().to_string();
        }
        assert_eq!(client.send(&format!("CONFIG_APPLY|{session}")), "OK");
        std::thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, Ordering::Release);
    let pairs: usize = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(pairs > 20, "readers ran {pairs} pairs");
    assert_eq!(dp.get("left.test", "/").body, (GENERATIONS - 1).to_string());
}

#[test]
fn ok_means_every_data_plane_serves_the_change() {
    let cp = ControlPlane::start();
    let dps = [
        DataPlane::start(&cp.grpc_url(), "dp-a"),
        DataPlane::start(&cp.grpc_url(), "dp-b"),
    ];
    let backend = FakeBackend::start("fleet");
    let mut client = LineClient::connect(cp.registry);
    let session = client.register("fleet", "fleet-1");
    for round in 0..5 {
        let host = format!("r{round}.fleet.test");
        add_and_apply(&mut client, &session, &host, "/", &backend.url());
        for dp in &dps {
            assert_eq!(
                dp.get(&host, "/").status,
                200,
                "{host} not served right after OK"
            );
        }
    }
}

#[test]
fn data_plane_keeps_serving_without_the_control_plane() {
    let mut cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("steady");
    let mut client = LineClient::connect(cp.registry);
    let session = client.register("steady", "steady-1");
    add_and_apply(&mut client, &session, "steady.test", "/", &backend.url());
    cp.proc.kill();
    let until = Instant::now() + Duration::from_secs(2);
    let mut served = 0;
    while Instant::now() < until {
        let response = dp.get("steady.test", "/");
        assert_eq!((response.status, response.body.as_str()), (200, "steady"));
        served += 1;
    }
    assert!(served > 10);
    wait_for(
        "a reconnect attempt logged",
        Duration::from_secs(10),
        || {
            dp.proc
                .log_contains("control plane link down")
                .then_some(())
        },
    );
    assert_eq!(dp.get("steady.test", "/").status, 200);
    assert_eq!(
        dp.ready_status(),
        Some(200),
        "still ready on its last configuration"
    );
}

#[test]
fn bad_lines_get_errors_and_the_connection_survives() {
    let cp = ControlPlane::start();
    let mut client = LineClient::connect(cp.registry);
    let session = client.register("x", "x-1");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"BOGUS|1\n".to_vec(), "ERROR|unknown command: BOGUS"),
        (
            b"PING\n".to_vec(),
            "ERROR|invalid format: expected PING|session",
        ),
        (b"PING|nobody\n".to_vec(), "ERROR|invalid session"),
        (b"\xff\xfe\n".to_vec(), "ERROR|invalid utf-8"),
        (
            [vec![b'A'; 20_000], b"\n".to_vec()].concat(),
            "ERROR|line too long (max 16384 bytes)",
        ),
        (
            format!("ROUTE_ADD|{session}|a.com|/|ftp://x|0\n").into_bytes(),
            "ERROR|invalid backend url \"ftp://x\": scheme must be http, https, ws or wss",
        ),
        (
            format!("ROUTE_ADD|{session}|a.com|nope|http://a|0\n").into_bytes(),
            "ERROR|invalid path \"nope\": must start with /",
        ),
        (
            format!("ROUTE_REMOVE|{session}|r999999\n").into_bytes(),
            "ERROR|route not found",
        ),
        (
            b"REGISTER|a|b|99999\n".to_vec(),
            "ERROR|invalid maintenance_port \"99999\": must be 0-65535",
        ),
    ];
    for (bytes, expected) in cases {
        client.send_raw(&bytes);
        assert_eq!(
            client.read_line(),
            expected,
            "for {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
        );
        assert_eq!(client.send(&format!("PING|{session}")), "PONG");
    }
    // CRLF line endings and empty lines are fine.
    client.send_raw(format!("\r\n\nPING|{session}\r\n").as_bytes());
    assert_eq!(client.read_line(), "PONG");
    let list = client.send(&format!("ROUTE_LIST|{session}"));
    assert_eq!(list, "ROUTE_LIST_OK|[]", "bad lines staged nothing");
}
