//! Keeping strangers out: registry tokens, safe backends, connection
//! limits, and the data plane's refusal of malformed requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use portico_e2e::dns::MockDns;
use portico_e2e::process::tempdir::TempDir;
use portico_e2e::{
    json_after, wait_for, ControlPlane, DataPlane, FakeBackend, LineClient, Session,
};

const SHOP_TOKEN: &str = "shop-token-0123456789abcdef";

fn auth_file(dir: &TempDir, body: &str) -> String {
    let path = dir.path().join("auth.json");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn shop_grant(token: &str, max_routes: usize) -> String {
    serde_json::json!({"tokens": [{
        "token": token,
        "services": ["shop", "shop-*"],
        "domains": ["shop.example.com", "*.shop.example.com"],
        "max_routes": max_routes,
    }]})
    .to_string()
}

fn register_with(client: &mut LineClient, service: &str, metadata: &str) -> String {
    client.send(&format!("REGISTER|{service}|{service}-1|0|{metadata}"))
}

#[test]
fn registry_tokens_bind_services_domains_and_route_budgets() {
    let dir = TempDir::new("portico-auth");
    let file = auth_file(&dir, &shop_grant(SHOP_TOKEN, 2));
    let cp = ControlPlane::start_with(&["--registry-auth", &file]);
    let dp = DataPlane::start(&cp.grpc_url(), "dp-auth");

    // No token, a wrong token, a service the token does not cover; the
    // third failure closes the connection.
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(register_with(&mut c, "shop", "{}"), "ERROR|unauthorized");
    let wrong = r#"{"token":"shop-token-0123456789abcdeX"}"#;
    assert_eq!(register_with(&mut c, "shop", wrong), "ERROR|unauthorized");
    let right = format!(r#"{{"token":"{SHOP_TOKEN}","team":"a"}}"#);
    assert_eq!(register_with(&mut c, "bank", &right), "ERROR|unauthorized");
    assert!(c.is_closed(), "three failures close the connection");
    assert!(
        !cp.proc.log_contains(SHOP_TOKEN),
        "the token is never logged"
    );

    // The right token: the public flow works within the grant.
    let mut c = LineClient::connect(cp.registry);
    let reply = register_with(&mut c, "shop-api", &right);
    let id = reply.strip_prefix("ACK|").expect(&reply).to_string();
    let mut s = Session { client: c, id };
    let backend = FakeBackend::start("shop");
    assert_eq!(
        s.cmd(
            "ROUTE_ADD",
            &format!("bank.example.com|/|{}|0", backend.url())
        ),
        "ERROR|domain not allowed for this service: bank.example.com"
    );
    assert_eq!(
        s.cmd(
            "ROUTE_ADD",
            &format!("shop.example.com|/|{}|0", backend.url())
        ),
        "ROUTE_OK|r1"
    );
    s.add_route("api.shop.example.com", "/", &backend.url());
    let third = s.cmd(
        "ROUTE_ADD",
        &format!("x.shop.example.com|/|{}|0", backend.url()),
    );
    assert_eq!(
        third,
        "ERROR|too many routes: this service's token allows 2"
    );
    s.apply();
    assert_eq!(dp.get("api.shop.example.com", "/").body, "shop");
    let info = s.json("SESSION_INFO", "", "SESSION_OK");
    assert_eq!(info["metadata"], serde_json::json!({"team": "a"}), "{info}");
    let stored = std::fs::read(cp.data_dir.path().join("state.redb")).unwrap();
    assert!(
        !stored
            .windows(SHOP_TOKEN.len())
            .any(|w| w == SHOP_TOKEN.as_bytes()),
        "the token is not stored in clear"
    );

    // A reload on SIGHUP changes the answer; a bad file keeps the last good one.
    let digest = format!(
        "sha256:{}",
        openssl::sha::sha256(b"another-token-0123456789")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    std::fs::write(&file, shop_grant(&digest, 10)).unwrap();
    cp.proc.signal("HUP");
    wait_for("the SIGHUP reload", Duration::from_secs(5), || {
        cp.proc.log_contains("why=\"SIGHUP\"").then_some(())
    });
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(register_with(&mut c, "shop", &right), "ERROR|unauthorized");
    let another = r#"{"token":"another-token-0123456789"}"#;
    assert!(register_with(&mut c, "shop", another).starts_with("ACK|"));
    // The old session's token is gone: it can claim nothing more.
    assert_eq!(
        s.cmd(
            "ROUTE_ADD",
            &format!("y.shop.example.com|/|{}|0", backend.url())
        ),
        "ERROR|unauthorized"
    );
    std::fs::write(&file, "{ not json").unwrap();
    wait_for("the bad file noticed", Duration::from_secs(5), || {
        cp.proc
            .log_contains("keeping the last good tokens")
            .then_some(())
    });
    let mut c = LineClient::connect(cp.registry);
    assert!(register_with(&mut c, "shop", another).starts_with("ACK|"));
}

#[test]
fn metadata_and_link_local_backends_are_refused_by_default() {
    let cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "web", "web-1");
    for (url, ip) in [
        ("http://169.254.169.254/", "169.254.169.254"),
        ("http://[fe80::1]:80", "fe80::1"),
        ("http://0.0.0.0:80", "0.0.0.0"),
    ] {
        assert_eq!(
            s.cmd("ROUTE_ADD", &format!("meta.test|/|{url}|0")),
            format!("ERROR|backend not allowed: {ip}")
        );
        assert_eq!(
            s.cmd("BACKEND_TEST", url),
            format!("ERROR|backend not allowed: {ip}")
        );
    }
    let r = s.add_route("ok.test", "/", "http://127.0.0.1:1");
    assert_eq!(
        s.cmd(
            "ROUTE_UPDATE",
            &format!("{r}|backend_url|http://169.254.169.254")
        ),
        "ERROR|backend not allowed: 169.254.169.254"
    );
    assert_eq!(s.cmd("ROUTE_LIST", "").matches("route_id").count(), 1);

    // An operator may open a range again.
    let open = ControlPlane::start_with(&["--backend-deny", ""]);
    let mut s = Session::register(open.registry, "web", "web-1");
    assert!(s
        .cmd("ROUTE_ADD", "meta.test|/|http://169.254.169.254|0")
        .starts_with("ROUTE_OK|"));
}

#[test]
fn a_name_that_resolves_to_a_denied_address_is_refused_on_the_data_plane() {
    let dns = MockDns::start();
    let cp = ControlPlane::start();
    let resolver = dns.addr.to_string();
    let dp = DataPlane::spawn(&cp.grpc_url(), "dp-deny", &["--resolver", &resolver]);
    dp.wait_ready();
    dns.set_a("metadata.portico.test", &["169.254.169.254"]);
    let mut s = Session::register(cp.registry, "sneaky", "sneaky-1");
    let r = s.add_route("sneaky.test", "/", "http://metadata.portico.test:80");
    assert_eq!(s.cmd("HEALTH_SET", &format!("{r}|/|1s|500ms")), "HEALTH_OK");
    assert_eq!(s.cmd("SUBSCRIBE", "backend_health_changed"), "SUBSCRIBE_OK");
    s.apply();
    let reply = dp.get("sneaky.test", "/");
    assert_eq!(reply.status, 502, "{}", reply.body);
    let event = s.client.read_line();
    let payload = json_after(
        event.strip_prefix("EVENT|").unwrap_or(&event),
        "backend_health_changed",
    );
    assert_eq!(payload["healthy"], false);
    let reason = payload["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("backend not allowed: 169.254.169.254"),
        "{reason}"
    );
    let tested = s.cmd("BACKEND_TEST", "http://metadata.portico.test:80");
    assert!(
        tested.contains("backend not allowed: 169.254.169.254"),
        "{tested}"
    );
}

#[test]
fn connections_beyond_the_per_address_limit_are_refused_and_the_others_keep_working() {
    let cp = ControlPlane::start_with(&["--max-connections-per-ip", "50"]);
    let mut live = Session::register(cp.registry, "live", "live-1");
    let mut held: Vec<LineClient> = (0..49).map(|_| LineClient::connect(cp.registry)).collect();
    for c in held.iter_mut().take(3) {
        assert_eq!(c.send("PING|nobody"), "ERROR|invalid session");
    }
    let mut refused = 0;
    for _ in 0..10 {
        let mut c = LineClient::connect(cp.registry);
        assert_eq!(c.read_line(), "ERROR|too many connections");
        assert!(c.is_closed());
        refused += 1;
    }
    assert_eq!(refused, 10);
    assert_eq!(live.cmd("PING", ""), "PONG");
    assert_eq!(held[48].send("PING|nobody"), "ERROR|invalid session");
    // A closed connection frees its place.
    held.pop();
    wait_for("a freed place", Duration::from_secs(5), || {
        let mut c = LineClient::connect(cp.registry);
        (c.send("PING|nobody") == "ERROR|invalid session").then_some(())
    });
}

#[test]
fn sessions_routes_and_unfinished_lines_are_bounded() {
    let cp = ControlPlane::start_with(&[
        "--max-sessions",
        "2",
        "--max-routes-per-session",
        "2",
        "--line-timeout",
        "1s",
    ]);
    let a = Session::register(cp.registry, "a", "a-1");
    let _b = Session::register(cp.registry, "b", "b-1");
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(
        c.send("REGISTER|c|c-1|0|{}"),
        "ERROR|too many sessions (max 2)"
    );
    // Taking over an existing instance is not a new session.
    assert!(c.send("REGISTER|a|a-1|0|{}").starts_with("ACK|"));
    let mut a2 = Session::register(cp.registry, "b", "b-1");
    a2.add_route("one.test", "/", "http://127.0.0.1:1");
    a2.add_route("two.test", "/", "http://127.0.0.1:2");
    assert_eq!(
        a2.cmd("ROUTE_ADD", "three.test|/|http://127.0.0.1:3|0"),
        "ERROR|too many routes: this session may have 2"
    );
    // Replaying an identical route is not a new one.
    assert!(a2
        .cmd("ROUTE_ADD", "two.test|/|http://127.0.0.1:2|0")
        .starts_with("ROUTE_OK|"));
    drop(a.client);

    // A half line held past the limit closes the connection; a whole line
    // does not: `whole`, idle since before `half` was cut, still answers.
    let mut whole = LineClient::connect(cp.registry);
    let mut half = LineClient::connect(cp.registry);
    half.send_raw(b"PING|nob");
    let started = Instant::now();
    assert!(half.is_closed());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(whole.send("PING|nobody"), "ERROR|invalid session");
}

#[test]
fn idle_and_half_line_connections_do_not_slow_a_live_session() {
    let cp = ControlPlane::start_with(&["--max-connections-per-ip", "5000"]);
    let mut live = Session::register(cp.registry, "live", "live-1");
    let mut idle: Vec<TcpStream> = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(cp.registry).unwrap();
        if i % 2 == 0 {
            s.write_all(b"REGISTER|half|").unwrap();
        }
        idle.push(s);
    }
    let mut took: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(live.cmd("PING", ""), "PONG");
            started.elapsed()
        })
        .collect();
    took.sort();
    let p99 = took[197];
    eprintln!(
        "PING with 1,000 idle and half-line connections: p50 {:?}, p99 {p99:?}",
        took[100]
    );
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    let mut one = &idle[1];
    let mut buf = [0u8; 1];
    one.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    assert!(one.read(&mut buf).is_err(), "idle connections stay open");
}

fn raw_request(dp: &DataPlane, request: &[u8]) -> String {
    let mut s = TcpStream::connect(dp.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn smuggling_shapes_oversized_heads_and_bad_hosts_are_refused() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-requests");
    let backend = FakeBackend::start("app");
    let mut s = Session::register(cp.registry, "app", "app-1");
    s.add_route("app.test", "/", &backend.url());
    s.apply();
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "400",
            "both Content-Length and Transfer-Encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
            "400",
            "",
        ),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n".to_vec(), "400", ""),
        (b"GET / HTTP/1.1\r\nHost: app test\r\n\r\n".to_vec(), "400", "invalid Host header"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400", "missing Host header"),
        (
            [
                b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: ".to_vec(),
                vec![b'a'; 70_000],
                b"\r\n\r\n".to_vec(),
            ]
            .concat(),
            "431",
            "request header fields too large",
        ),
        (
            [
                b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec(),
                (0..101).flat_map(|i| format!("X-H{i}: v\r\n").into_bytes()).collect(),
                b"\r\n".to_vec(),
            ]
            .concat(),
            "431",
            "too many request header fields",
        ),
    ];
    for (request, status, body) in &cases {
        let reply = raw_request(&dp, request);
        let line = reply.lines().next().unwrap_or("");
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{}: {reply}",
            String::from_utf8_lossy(&request[..request.len().min(80)])
        );
        assert!(reply.contains(body), "{reply}");
    }
    assert_eq!(backend.hits(), 0, "nothing refused reached the backend");
    assert_eq!(dp.get("app.test", "/").status, 200);
}

#[test]
fn a_registry_open_beyond_loopback_without_auth_is_warned_about() {
    let open = ControlPlane::start_with(&["--registry-listen", "0.0.0.0:0"]);
    assert!(open
        .proc
        .log_contains("the registry listens beyond loopback without --registry-auth"));
    let local = ControlPlane::start();
    assert!(!local.proc.log_contains("without --registry-auth"));
}
