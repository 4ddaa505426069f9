//! Who may come in: the real client behind trusted proxies
//! (`--trusted-proxies`), and per-route IP allow and deny lists (IPv4 and
//! IPv6), sent from distinct loopback addresses.

use std::net::IpAddr;
use std::time::Duration;

use portico_e2e::process::tempdir::TempDir;
use portico_e2e::{
    http_get, http_request_from, wait_for, ControlPlane, DataPlane, FakeBackend, Session,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The status `host` answers to a request from `source` with `headers`.
fn status(dp: &DataPlane, source: &str, host: &str, headers: &[(&str, &str)]) -> u16 {
    http_request_from(ip(source), dp.proxy, host, "/", headers)
        .expect("a request from a loopback source")
        .status
}

fn ok(reply: String) {
    assert!(
        reply.starts_with("OPTION") || reply.starts_with("RATELIMIT_OK") || reply == "OK",
        "{reply}"
    );
}

#[test]
fn allow_and_deny_lists_admit_clients_by_network_v4_and_v6() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "lists-dp");
    let dp6 = DataPlane::spawn_on(&cp.grpc_url(), "lists-dp6", "[::1]:0", &[]);
    dp6.wait_ready();
    let backend = FakeBackend::start("listed");
    let mut s = Session::register(cp.registry, "listed", "listed-1");
    s.add_route("lists.test", "/", &backend.url());
    ok(s.cmd("OPTIONS_SET", "ALL|ip_allow|127.0.0.2, 127.0.0.3,::1"));
    ok(s.cmd("OPTIONS_SET", "ALL|ip_deny|127.0.0.3"));
    let bad = s.cmd("OPTIONS_SET", "ALL|ip_deny|10.0.0.0/33");
    assert!(
        bad.contains("\"10.0.0.0/33\" is neither a CIDR nor an address"),
        "{bad}"
    );
    s.apply();
    wait_for("the lists served", Duration::from_secs(10), || {
        (status(&dp, "127.0.0.2", "lists.test", &[]) == 200).then_some(())
    });
    assert_eq!(
        status(&dp, "127.0.0.3", "lists.test", &[]),
        403,
        "deny wins over allow"
    );
    assert_eq!(
        status(&dp, "127.0.0.4", "lists.test", &[]),
        403,
        "not on the allow list"
    );
    let refused = http_request_from(ip("127.0.0.4"), dp.proxy, "lists.test", "/", &[]).unwrap();
    assert_eq!(refused.body, "portico: forbidden\n");
    assert_eq!(
        backend.hits_for("/"),
        1,
        "refused requests reach no backend"
    );
    assert_eq!(status(&dp6, "::1", "lists.test", &[]), 200);

    ok(s.cmd("OPTIONS_SET", "ALL|ip_deny|::1/128"));
    s.apply();
    wait_for("::1 denied", Duration::from_secs(10), || {
        (status(&dp6, "::1", "lists.test", &[]) == 403).then_some(())
    });
    // Removed lists admit everyone again.
    ok(s.cmd("OPTIONS_REMOVE", "ALL|ip_allow"));
    ok(s.cmd("OPTIONS_REMOVE", "ALL|ip_deny"));
    s.apply();
    wait_for("the lists gone", Duration::from_secs(10), || {
        (status(&dp, "127.0.0.4", "lists.test", &[]) == 200).then_some(())
    });
    assert_eq!(status(&dp6, "::1", "lists.test", &[]), 200);
}

#[test]
fn a_trusted_proxy_names_the_client_and_nobody_else_can() {
    let dir = TempDir::new("portico-clients");
    let log = dir.path().join("access.log");
    let cp = ControlPlane::start();
    let dp = DataPlane::spawn(
        &cp.grpc_url(),
        "clients-dp",
        &[
            "--trusted-proxies",
            "127.0.0.5,127.0.0.50",
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    dp.wait_ready();
    let backend = FakeBackend::start("real");
    let mut s = Session::register(cp.registry, "clients", "clients-1");
    let denied = s.add_route("deny.test", "/", &backend.url());
    let limited = s.add_route("limit.test", "/", &backend.url());
    ok(s.cmd("OPTIONS_SET", &format!("{denied}|ip_deny|203.0.113.9")));
    ok(s.cmd("RATELIMIT_SET", &format!("{limited}|2|1m")));
    s.apply();
    wait_for("the routes served", Duration::from_secs(10), || {
        (status(&dp, "127.0.0.6", "deny.test", &[]) == 200).then_some(())
    });

    let xff = |v: &'static str| [("X-Forwarded-For", v)];
    assert_eq!(
        status(&dp, "127.0.0.5", "deny.test", &xff("203.0.113.9")),
        403,
        "named by a trusted proxy"
    );
    assert_eq!(
        status(&dp, "127.0.0.6", "deny.test", &xff("203.0.113.9")),
        200,
        "an untrusted peer cannot name anyone"
    );
    // The client wrote the first address itself; the trusted proxies
    // appended what they saw: the right-most untrusted one is the client.
    assert_eq!(
        status(
            &dp,
            "127.0.0.5",
            "deny.test",
            &xff("198.51.100.1, 203.0.113.9, 127.0.0.50")
        ),
        403
    );
    assert_eq!(
        status(
            &dp,
            "127.0.0.5",
            "deny.test",
            &xff("203.0.113.9, 198.51.100.1")
        ),
        200,
        "a spoofed first hop is not the client"
    );
    assert_eq!(
        status(
            &dp,
            "127.0.0.5",
            "deny.test",
            &[("Forwarded", "for=203.0.113.9;proto=https")]
        ),
        403
    );
    // A malformed header: the proxy's own address, counted.
    assert_eq!(
        status(&dp, "127.0.0.5", "deny.test", &xff("203.0.113.9, garbage")),
        200
    );
    let metrics = http_get(dp.admin, "localhost", "/metrics").unwrap().body;
    assert!(
        metrics.contains("portico_client_address_malformed_total 1"),
        "{metrics}"
    );

    // Rate limits count real clients behind the proxy, each on its own.
    for _ in 0..2 {
        assert_eq!(
            status(&dp, "127.0.0.5", "limit.test", &xff("198.51.100.7")),
            200
        );
    }
    assert_eq!(
        status(&dp, "127.0.0.5", "limit.test", &xff("198.51.100.7")),
        429
    );
    assert_eq!(
        status(&dp, "127.0.0.5", "limit.test", &xff("198.51.100.8")),
        200,
        "another client behind the same proxy"
    );

    // The access log names the real client; the backend still gets the chain.
    wait_for("the access log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("\"client\":\"198.51.100.8\"").then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("\"client\":\"127.0.0.6:")),
        "{text}"
    );
    let seen = backend.last_request.lock().unwrap().clone();
    assert!(
        seen.to_ascii_lowercase()
            .contains("x-forwarded-for: 198.51.100.8, 127.0.0.5"),
        "{seen}"
    );
}

/// The access-log line of the request to `path`, once written.
fn logged(log: &std::path::Path, path: &str) -> serde_json::Value {
    wait_for(
        &format!("the line of {path}"),
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(log).ok()?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["path"] == path)
        },
    )
}

#[test]
fn the_access_log_keeps_only_what_pii_options_allow() {
    let dir = TempDir::new("portico-pii");
    let log = dir.path().join("access.log");
    let key = dir.path().join("pii.key");
    std::fs::write(&key, "a key of the test, 32 bytes long").unwrap();
    let cp = ControlPlane::start();
    let dp = DataPlane::spawn(
        &cp.grpc_url(),
        "pii-dp",
        &[
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-pii",
            "pii_ip=last_octet;pii_mask_query=token",
            "--pii-key-file",
            key.to_str().unwrap(),
            "--trusted-proxies",
            "127.0.0.5",
        ],
    );
    dp.wait_ready();
    let backend = FakeBackend::start("pii");
    let mut s = Session::register(cp.registry, "pii", "pii-1");
    s.add_route("defaults.test", "/", &backend.url());
    let hashed = s.add_route("hash.test", "/", &backend.url());
    let full = s.add_route("full.test", "/", &backend.url());
    let open = s.add_route("open.test", "/", &backend.url());
    let private = s.add_route("private.test", "/", &backend.url());
    ok(s.cmd("OPTIONS_SET", &format!("{hashed}|pii_ip|hash")));
    ok(s.cmd("OPTIONS_SET", &format!("{full}|pii_ip|full")));
    ok(s.cmd(
        "OPTIONS_SET",
        &format!("{full}|pii_mask_query|Password,session"),
    ));
    ok(s.cmd("OPTIONS_SET", &format!("{open}|pii_ip|none")));
    ok(s.cmd("OPTIONS_SET", &format!("{private}|pii_ip|full")));
    ok(s.cmd(
        "OPTIONS_SET",
        &format!("{private}|pii_preserve_private|true"),
    ));
    let bad = s.cmd("OPTIONS_SET", &format!("{open}|pii_ip|scramble"));
    assert!(
        bad.contains("must be none, last_octet, hash or full"),
        "{bad}"
    );
    s.apply();
    let get = |source: &str, host: &str, path: &str, headers: &[(&str, &str)]| {
        http_request_from(ip(source), dp.proxy, host, path, headers)
            .unwrap()
            .status
    };
    wait_for("the routes served", Duration::from_secs(10), || {
        (get("127.0.0.9", "defaults.test", "/warm", &[]) == 200).then_some(())
    });

    get("127.0.0.9", "defaults.test", "/d?q=1&token=secret", &[]);
    let line = logged(&log, "/d");
    assert_eq!(
        (line["client"].as_str(), line["query"].as_str()),
        (Some("127.0.0.0"), Some("q=1&token=***"))
    );
    // Behind a trusted proxy the named client is the one masked.
    get(
        "127.0.0.5",
        "defaults.test",
        "/fwd",
        &[("X-Forwarded-For", "203.0.113.45")],
    );
    assert_eq!(logged(&log, "/fwd")["client"], "203.0.113.0");

    get("127.0.0.9", "hash.test", "/h1", &[]);
    get("127.0.0.9", "hash.test", "/h2", &[]);
    get("127.0.0.8", "hash.test", "/h3", &[]);
    let (h1, h2, h3) = (
        logged(&log, "/h1")["client"].clone(),
        logged(&log, "/h2")["client"].clone(),
        logged(&log, "/h3")["client"].clone(),
    );
    assert!(
        h1.as_str().unwrap().starts_with("h:") && h1 == h2 && h1 != h3,
        "{h1} {h2} {h3}"
    );
    assert!(!h1.as_str().unwrap().contains("127.0.0"), "{h1}");

    get(
        "127.0.0.9",
        "full.test",
        "/f?password=hunter2&token=t&SESSION=s",
        &[],
    );
    let line = logged(&log, "/f");
    assert_eq!(line["client"], "***");
    // The route's own list replaces the defaults' (token is not in it).
    assert_eq!(line["query"], "password=***&token=t&SESSION=***");

    get("127.0.0.9", "open.test", "/o", &[]);
    assert!(logged(&log, "/o")["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.9:"));
    get("127.0.0.9", "private.test", "/p", &[]);
    assert!(logged(&log, "/p")["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.9"));
    // The backend still gets the real address.
    let seen = backend.last_request.lock().unwrap().clone();
    assert!(
        seen.to_ascii_lowercase()
            .contains("x-forwarded-for: 127.0.0.9"),
        "{seen}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("secret") && !text.contains("hunter2"),
        "{text}"
    );
}

#[test]
fn routes_filter_by_country_from_a_geoip_database_read_again_when_replaced() {
    let dir = TempDir::new("portico-geo");
    let db = dir.path().join("country.mmdb");
    let log = dir.path().join("access.log");
    portico_e2e::geoip::write_db(
        &db,
        &[
            ("127.0.0.2/32", "DE"),
            ("127.0.0.3/32", "US"),
            ("::1/128", "FR"),
        ],
    );
    let cp = ControlPlane::start();
    let args = [
        "--geoip-db",
        db.to_str().unwrap(),
        "--access-log",
        log.to_str().unwrap(),
    ];
    let dp = DataPlane::spawn(&cp.grpc_url(), "geo-dp", &args);
    dp.wait_ready();
    let dp6 = DataPlane::spawn_on(&cp.grpc_url(), "geo-dp6", "[::1]:0", &args[..2]);
    dp6.wait_ready();
    let backend = FakeBackend::start("geo");
    let mut s = Session::register(cp.registry, "geo", "geo-1");
    let allowed = s.add_route("allow.test", "/", &backend.url());
    let denied = s.add_route("deny.test", "/", &backend.url());
    let strict = s.add_route("strict.test", "/", &backend.url());
    ok(s.cmd("OPTIONS_SET", &format!("{allowed}|geo_allow|de,FR")));
    ok(s.cmd("OPTIONS_SET", &format!("{denied}|geo_deny|US")));
    ok(s.cmd("OPTIONS_SET", &format!("{strict}|geo_allow|DE")));
    ok(s.cmd("OPTIONS_SET", &format!("{strict}|geo_unknown|deny")));
    let bad = s.cmd("OPTIONS_SET", &format!("{strict}|geo_allow|Germany"));
    assert!(bad.contains("not a two-letter country code"), "{bad}");
    assert_eq!(s.cmd("SUBSCRIBE", "geo_blocked"), "SUBSCRIBE_OK");
    s.apply();
    wait_for("the routes served", Duration::from_secs(10), || {
        (status(&dp, "127.0.0.2", "allow.test", &[]) == 200).then_some(())
    });

    assert_eq!(
        status(&dp, "127.0.0.3", "allow.test", &[]),
        403,
        "US is not allowed"
    );
    assert_eq!(
        status(&dp, "127.0.0.4", "allow.test", &[]),
        200,
        "unknown addresses pass by default"
    );
    assert_eq!(status(&dp6, "::1", "allow.test", &[]), 200, "FR over IPv6");
    assert_eq!(status(&dp, "127.0.0.3", "deny.test", &[]), 403);
    assert_eq!(status(&dp, "127.0.0.2", "deny.test", &[]), 200);
    assert_eq!(
        status(&dp, "127.0.0.4", "strict.test", &[]),
        403,
        "geo_unknown deny"
    );
    let metrics = http_get(dp.admin, "localhost", "/metrics").unwrap().body;
    for line in [
        format!("portico_geo_blocked_total{{route_id=\"{allowed}\",country=\"US\"}} 1"),
        format!("portico_geo_blocked_total{{route_id=\"{strict}\",country=\"unknown\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    // The owning session hears of it, counted, within the next report.
    let event = wait_for("the geo_blocked event", Duration::from_secs(10), || {
        let line = s.client.read_line();
        let json = line.strip_prefix("EVENT|geo_blocked|")?;
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        (v["route_id"] == allowed.as_str()).then_some(v)
    });
    assert_eq!(
        (
            event["country"].as_str(),
            event["count"].as_u64(),
            event["node_id"].as_str()
        ),
        (Some("US"), Some(1), Some("geo-dp"))
    );
    http_request_from(ip("127.0.0.2"), dp.proxy, "allow.test", "/logged-de", &[]).unwrap();
    assert_eq!(logged(&log, "/logged-de")["country"], "DE");

    // Replaced while serving: new answers within seconds, no request fails.
    let started = std::time::Instant::now();
    portico_e2e::geoip::write_db(&db, &[("127.0.0.2/32", "US"), ("127.0.0.3/32", "DE")]);
    wait_for("the new database", Duration::from_secs(10), || {
        let now = status(&dp, "127.0.0.2", "allow.test", &[]);
        assert!(
            now == 200 || now == 403,
            "a request failed during the swap: {now}"
        );
        (now == 403).then_some(())
    });
    println!(
        "the replaced database answered {:?} after the write",
        started.elapsed()
    );
    assert_eq!(status(&dp, "127.0.0.3", "allow.test", &[]), 200);
}

#[test]
fn geo_rules_are_refused_while_a_data_plane_has_no_database() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "no-geo-dp");
    let backend = FakeBackend::start("geo");
    let mut s = Session::register(cp.registry, "geo", "geo-1");
    let r = s.add_route("geo.test", "/", &backend.url());
    ok(s.cmd("OPTIONS_SET", &format!("{r}|geo_allow|DE")));
    let reply = s.cmd("CONFIG_APPLY", "");
    assert_eq!(
        reply,
        format!("ERROR|route {r}: geo rules need a GeoIP database, and data plane no-geo-dp has none (portico-dp --geoip-db)")
    );
    assert_eq!(dp.get("geo.test", "/").status, 404, "nothing was applied");
    // Without the geo rule the same route applies.
    ok(s.cmd("OPTIONS_REMOVE", &format!("{r}|geo_allow")));
    s.apply();
    assert_eq!(dp.get("geo.test", "/").status, 200);
}

/// Sends `bytes` on a new connection to `addr` and reads until it closes.
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn a_proxy_protocol_listener_takes_the_client_from_the_header() {
    let dir = TempDir::new("portico-pp");
    let log = dir.path().join("access.log");
    let cp = ControlPlane::start();
    let mut dp = DataPlane::spawn(
        &cp.grpc_url(),
        "pp-dp",
        &[
            "--listen-proxy-protocol",
            "127.0.0.1:0",
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let pp = dp.proc.listening("proxy_protocol");
    dp.wait_ready();
    let backend = FakeBackend::start("pp");
    let mut s = Session::register(cp.registry, "pp", "pp-1");
    let r = s.add_route("pp.test", "/", &backend.url());
    ok(s.cmd("OPTIONS_SET", &format!("{r}|ip_deny|203.0.113.9")));
    s.apply();
    wait_for("the route served", Duration::from_secs(10), || {
        (dp.get("pp.test", "/").status == 200).then_some(())
    });
    let get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n");

    let v1 = |src: &str, path: &str| {
        raw(
            pp,
            format!("PROXY TCP4 {src} 127.0.0.1 5555 80\r\n{}", get(path)).as_bytes(),
        )
    };
    assert!(
        v1("203.0.113.9", "/denied").starts_with("HTTP/1.1 403"),
        "the header's client is denied"
    );
    assert!(v1("198.51.100.7", "/v1").starts_with("HTTP/1.1 200"));
    assert_eq!(logged(&log, "/v1")["client"], "198.51.100.7:5555");

    // Version 2, binary, over TCP/IPv4: the client's address, then port 443.
    let v2 = |client: [u8; 4], path: &str| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend([0x21, 0x11, 0, 12]);
        h.extend(client);
        h.extend([127, 0, 0, 1, 0x01, 0xbb, 0, 80]);
        h.extend(get(path).as_bytes());
        raw(pp, &h)
    };
    assert!(v2([203, 0, 113, 9], "/v2-denied").starts_with("HTTP/1.1 403"));
    assert!(v2([198, 51, 100, 8], "/v2").starts_with("HTTP/1.1 200"));
    assert_eq!(logged(&log, "/v2")["client"], "198.51.100.8:443");

    // No header, or a bad one: closed without an answer.
    assert_eq!(raw(pp, get("/none").as_bytes()), "");
    assert_eq!(
        raw(
            pp,
            format!("PROXY TCP4 nope 1.2.3.4 1 2\r\n{}", get("/bad")).as_bytes()
        ),
        ""
    );
    // The plain listener still serves without a header.
    assert_eq!(dp.get("pp.test", "/").status, 200);
}
