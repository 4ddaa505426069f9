//! The data plane enforces what services configure, measured through real
//! traffic: health probes, circuit breakers, rate limits, drain ramps,
//! maintenance, headers and options, and telemetry summed by the control plane.

use std::io::Read;
use std::time::{Duration, Instant};

use portico_e2e::process;
use portico_e2e::*;
use serde_json::Value;

fn cluster() -> (ControlPlane, DataPlane) {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    (cp, dp)
}

/// Waits until a route's configuration (with its setting) is live.
fn wait_config(dp: &DataPlane, check: impl Fn(&Value) -> bool) {
    wait_for(
        "configuration on the data plane",
        Duration::from_secs(10),
        || check(&dp.config()).then_some(()),
    );
}

#[test]
fn health_probes_take_a_failing_backend_out_and_bring_it_back() {
    let (cp, dp) = cluster();
    let (a, b) = (FakeBackend::start("a"), FakeBackend::start("b"));
    let mut one = Session::register(cp.registry, "web", "web-1");
    let mut two = Session::register(cp.registry, "web", "web-2");
    let ra = one.add_route("h.test", "/", &a.url());
    assert_eq!(
        one.cmd("HEALTH_SET", &format!("{ra}|/probe|1s|500ms")),
        "HEALTH_OK"
    );
    one.apply();
    let rb = two.add_route("h.test", "/", &b.url());
    assert_eq!(
        two.cmd("HEALTH_SET", &format!("{rb}|/health|1s|500ms")),
        "HEALTH_OK"
    );
    two.apply();
    assert_eq!(
        one.cmd("SUBSCRIBE", "backend_health_changed"),
        "SUBSCRIBE_OK"
    );
    wait_for("a probed", Duration::from_secs(5), || {
        (a.hits_for("/probe") > 0).then_some(())
    });
    for _ in 0..4 {
        assert_eq!(dp.get("h.test", "/x").status, 200);
    }
    assert_eq!((a.hits_for("/x"), b.hits_for("/x")), (2, 2));

    // a's probe path starts failing: within interval + timeout it is out.
    a.set_status(503);
    let failed_at = Instant::now();
    let event = one.client.read_line();
    let payload = json_after(
        event.strip_prefix("EVENT|").unwrap(),
        "backend_health_changed",
    );
    assert_eq!(payload["route_id"], ra.as_str());
    assert_eq!(payload["backend"], a.url().as_str());
    assert_eq!(payload["healthy"], false);
    assert_eq!(payload["reason"], "status 503");
    assert!(
        failed_at.elapsed() <= Duration::from_millis(1500 + 1000),
        "took {:?}",
        failed_at.elapsed()
    );
    let before = a.hits_for("/x");
    for _ in 0..10 {
        let r = dp.get("h.test", "/x");
        assert_eq!((r.status, r.body.as_str()), (200, "b"));
    }
    assert_eq!(
        a.hits_for("/x"),
        before,
        "an unhealthy backend gets no traffic"
    );

    // Every backend down: 503 at once, with a clear body.
    b.stop();
    wait_for("b marked down", Duration::from_secs(5), || {
        (dp.get("h.test", "/x").status == 503).then_some(())
    });
    let started = Instant::now();
    let r = dp.get("h.test", "/x");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("every backend is unhealthy"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_millis(500));

    // a recovers: it is back, and the session hears of it.
    a.set_status(200);
    let event = one.client.read_line();
    let payload = json_after(
        event.strip_prefix("EVENT|").unwrap(),
        "backend_health_changed",
    );
    assert_eq!(
        (payload["healthy"].as_bool(), payload["route_id"].as_str()),
        (Some(true), Some(ra.as_str()))
    );
    assert_eq!(dp.get("h.test", "/x").body, "a");
}

#[test]
fn a_breaker_opens_after_exactly_threshold_failures() {
    let (cp, dp) = cluster();
    let backend = FakeBackend::start("flaky");
    let mut s = Session::register(cp.registry, "cb", "cb-1");
    let r = s.add_route("cb.test", "/", &backend.url());
    s.cmd("HEALTH_SET", &format!("{r}|/health|30s|5s"));
    assert_eq!(
        s.cmd("CIRCUIT_BREAKER_SET", &format!("{r}|3|2s|1")),
        "CIRCUIT_OK"
    );
    s.apply();
    backend.set_status(500);
    for i in 1..=3 {
        assert_eq!(
            dp.get("cb.test", "/w").status,
            500,
            "failure {i} reaches the backend"
        );
    }
    assert_eq!(backend.hits_for("/w"), 3);
    for _ in 0..5 {
        let r = dp.get("cb.test", "/w");
        assert_eq!(r.status, 503);
        assert!(r.body.contains("circuit breaker open"), "{}", r.body);
    }
    assert_eq!(
        backend.hits_for("/w"),
        3,
        "no request reaches the backend while open"
    );
    // A configuration swap (another route applied) keeps the breaker's state.
    let mut other = Session::register(cp.registry, "other", "other-1");
    other.add_route("other.test", "/", &backend.url());
    other.apply();
    assert_eq!(
        dp.get("cb.test", "/w").status,
        503,
        "still open after the swap"
    );
    assert_eq!(backend.hits_for("/w"), 3);
    let status = wait_for("open state reported", Duration::from_secs(5), || {
        let st = s.json("CIRCUIT_BREAKER_STATUS", &r, "CIRCUIT_STATUS_OK");
        (st["state"] == "open").then_some(st)
    });
    assert_eq!(status["failures"], 3);
    assert_eq!(status["data_planes"][0]["node_id"], "dp-1");
    assert!(status["next_attempt"].as_str().unwrap().ends_with('Z'));

    // After the timeout one trial decides: success closes it.
    backend.set_status(200);
    // Refused (503) without reaching the backend until the timeout ends.
    wait_for("the breaker's trial", Duration::from_secs(10), || {
        (dp.get("cb.test", "/w").status == 200).then_some(())
    });
    assert_eq!(backend.hits_for("/w"), 4);
    assert_eq!(dp.get("cb.test", "/w").status, 200);

    // Open it again, then RESET closes it on every data plane at once.
    backend.set_status(500);
    for _ in 0..3 {
        dp.get("cb.test", "/w");
    }
    assert_eq!(dp.get("cb.test", "/w").status, 503);
    backend.set_status(200);
    assert_eq!(s.cmd("CIRCUIT_BREAKER_RESET", &r), "CIRCUIT_OK");
    wait_for(
        "reset reached the data plane",
        Duration::from_secs(5),
        || (dp.get("cb.test", "/w").status == 200).then_some(()),
    );
    assert_eq!(
        s.json("CIRCUIT_BREAKER_STATUS", &r, "CIRCUIT_STATUS_OK")["state"],
        "closed"
    );
}

#[test]
fn rate_limit_answers_429_from_request_limit_plus_one() {
    let (cp, dp) = cluster();
    let backend = FakeBackend::start("rl");
    let mut s = Session::register(cp.registry, "rl", "rl-1");
    let r = s.add_route("rl.test", "/", &backend.url());
    assert_eq!(s.cmd("RATELIMIT_SET", &format!("{r}|5|1m")), "RATELIMIT_OK");
    s.apply();
    for i in 1..=5 {
        assert_eq!(dp.get("rl.test", "/w").status, 200, "request {i}");
    }
    let limited = dp.get("rl.test", "/w");
    assert_eq!(limited.status, 429);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(dp.get("rl.test", "/w").status, 429);
    assert_eq!(
        backend.hits_for("/w"),
        5,
        "limited requests never reach the backend"
    );
    // ALL gives every route of the session its own limit; the route-level one stays.
    s.add_route("rl2.test", "/", &backend.url());
    assert_eq!(s.cmd("RATELIMIT_SET", "ALL|2|1m"), "RATELIMIT_OK");
    s.apply();
    assert_eq!(dp.get("rl2.test", "/w").status, 200);
    assert_eq!(dp.get("rl2.test", "/w").status, 200);
    assert_eq!(dp.get("rl2.test", "/w").status, 429);
    assert_eq!(
        dp.get("rl.test", "/w").status,
        429,
        "r1 keeps its own window"
    );
}

#[test]
fn drain_ramps_the_share_down_to_zero() {
    let (cp, dp) = cluster();
    let (a, b) = (FakeBackend::start("a"), FakeBackend::start("b"));
    let mut one = Session::register(cp.registry, "d", "d-1");
    let mut two = Session::register(cp.registry, "d", "d-2");
    one.add_route("drain.test", "/", &a.url());
    one.apply();
    two.add_route("drain.test", "/", &b.url());
    two.apply();
    assert_eq!(one.cmd("SUBSCRIBE", "drain_completed"), "SUBSCRIBE_OK");
    let reply = one.cmd("DRAIN_START", "10");
    assert!(reply.starts_with("DRAIN_OK|"), "{reply}");
    let started = Instant::now();
    let mut per_second = [(0u32, 0u32); 12];
    while started.elapsed() < Duration::from_secs(12) {
        let r = dp.get("drain.test", "/");
        assert_eq!(r.status, 200);
        let second = started.elapsed().as_secs() as usize;
        if second < per_second.len() {
            per_second[second].1 += 1;
            if r.body == "a" {
                per_second[second].0 += 1;
            }
        }
    }
    for (second, (to_a, total)) in per_second.iter().enumerate() {
        let weight = (1.0 - (second as f64 + 0.5) / 10.0).clamp(0.0, 1.0);
        let expected = weight / (weight + 1.0);
        let measured = *to_a as f64 / *total as f64;
        assert!(*total > 20, "second {second}: only {total} requests");
        assert!(
            (measured - expected).abs() <= 0.10,
            "second {second}: share {measured:.2}, ramp says {expected:.2}"
        );
    }
    assert_eq!(
        per_second[11].0, 0,
        "after the ramp the draining backend gets nothing"
    );
    let event = one.client.read_line();
    assert!(event.starts_with("EVENT|drain_completed|{"), "{event}");
    // Alone in its pool, a drained backend keeps serving.
    two.cmd("CLIENT_SHUTDOWN", "");
    assert_eq!(dp.get("drain.test", "/").body, "a");
}

#[test]
fn maintenance_proxies_to_the_page_or_answers_the_built_in_one() {
    let (cp, dp) = cluster();
    let own = FakeBackend::start("own");
    let page = FakeBackend::start("we are upgrading");
    let mut s = Session::register(cp.registry, "m", "m-1");
    let r = s.add_route("m.test", "/", &own.url());
    s.apply();
    assert_eq!(s.cmd("MAINT_ENTER", &format!("{r}|{}", page.url())), "ACK");
    assert_eq!(s.client.read_line(), format!("MAINT_OK|{r}"));
    assert_eq!(dp.get("m.test", "/").body, "we are upgrading");
    assert_eq!(s.cmd("MAINT_EXIT", &r), "ACK");
    assert_eq!(s.client.read_line(), format!("MAINT_OK|{r}"));
    assert_eq!(dp.get("m.test", "/").body, "own");

    let mut quiet = Session::register(cp.registry, "q", "q-1");
    quiet.add_route("q.test", "/", &own.url());
    quiet.apply();
    assert_eq!(quiet.cmd("MAINT_ENTER", "ALL"), "ACK");
    assert_eq!(quiet.client.read_line(), "MAINT_OK|ALL");
    let r = dp.get("q.test", "/");
    assert_eq!(r.status, 503);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.header("retry-after").is_some());
    assert!(r.body.contains("maintenance"), "{}", r.body);
}

#[test]
fn headers_timeouts_retries_compression_and_websocket_options() {
    let (cp, dp) = cluster();
    let slow = FakeBackend::start("slow");
    let mut s = Session::register(cp.registry, "o", "o-1");
    let r = s.add_route("o.test", "/", &slow.url());
    s.cmd("HEADERS_SET", "ALL|X-Frame-Options|DENY");
    s.cmd("HEADERS_SET", &format!("{r}|Cache-Control|no-store"));
    s.cmd("OPTIONS_SET", &format!("{r}|timeout|500ms"));
    s.cmd("HEALTH_SET", &format!("{r}|/health|30s|5s"));
    s.apply();
    let ok = dp.get("o.test", "/");
    assert_eq!(ok.header("x-frame-options"), Some("DENY"));
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    slow.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    assert_eq!(dp.get("o.test", "/").status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    slow.set_delay(Duration::ZERO);

    // retries: a dead backend in the pool costs idempotent requests nothing.
    let alive = FakeBackend::start("alive");
    let dead = FakeBackend::start("dead");
    dead.stop();
    let mut p1 = Session::register(cp.registry, "pool", "p-1");
    let mut p2 = Session::register(cp.registry, "pool", "p-2");
    let rd = p1.add_route("retry.test", "/", &dead.url());
    p1.cmd("OPTIONS_SET", &format!("{rd}|retries|1"));
    p1.cmd("HEALTH_SET", &format!("{rd}|/health|30s|5s"));
    p1.apply();
    let ra = p2.add_route("retry.test", "/", &alive.url());
    p2.cmd("HEALTH_SET", &format!("{ra}|/health|30s|5s"));
    p2.apply();
    wait_config(&dp, |c| c["routes"].as_array().unwrap().len() == 3);
    // The dead backend may be probed down first; either way nothing fails.
    for _ in 0..6 {
        let r = dp.get("retry.test", "/");
        assert_eq!((r.status, r.body.as_str()), (200, "alive"));
    }

    // compression: gzip when the client accepts it (bodies of 20 bytes and more).
    let text_body = "compressible ".repeat(8);
    let big = FakeBackend::start(&text_body);
    let rg = s.add_route("gz.test", "/", &big.url());
    s.cmd("OPTIONS_SET", &format!("{rg}|compression|true"));
    s.apply();
    let gz = http_request(dp.proxy, "gz.test", "/", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(
        gz.header("content-encoding"),
        Some("gzip"),
        "{:?} {}",
        gz.headers,
        dp.config()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz.raw_body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, text_body);
    assert_eq!(dp.get("gz.test", "/").header("content-encoding"), None);
    assert_eq!(dp.get("gz.test", "/").body, text_body);

    // websocket: upgrades are refused until the option allows them.
    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let refused = http_request(dp.proxy, "o.test", "/ws", &upgrade).unwrap();
    assert_eq!(refused.status, 400);
    assert_eq!(slow.hits_for("/ws"), 0);
    s.cmd("OPTIONS_SET", &format!("{r}|websocket|true"));
    s.apply();
    // The upgrade is proxied (the fake backend answers 200, not 101); the
    // test only waits for it to arrive rather than for the connection to end.
    let mut raw = std::net::TcpStream::connect(dp.proxy).unwrap();
    let head: String = upgrade
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    std::io::Write::write_all(
        &mut raw,
        format!("GET /ws HTTP/1.1\r\nHost: o.test\r\n{head}\r\n").as_bytes(),
    )
    .unwrap();
    wait_for("the upgrade at the backend", Duration::from_secs(5), || {
        (slow.hits_for("/ws") == 1).then_some(())
    });
}

#[test]
fn stats_sum_both_data_planes_with_percentiles_from_merged_histograms() {
    let cp = ControlPlane::start();
    let dps = [
        DataPlane::start(&cp.grpc_url(), "dp-a"),
        DataPlane::start(&cp.grpc_url(), "dp-b"),
    ];
    let backend = FakeBackend::start("0123456789");
    let mut s = Session::register(cp.registry, "st", "st-1");
    let r = s.add_route("st.test", "/", &backend.url());
    s.cmd("HEALTH_SET", &format!("{r}|/health|30s|5s"));
    s.apply();
    backend.set_delay(Duration::from_millis(40));
    for i in 0..60 {
        assert_eq!(dps[i % 2].get("st.test", "/").status, 200);
    }
    // Stats survive a configuration swap in the middle of the traffic.
    let mut other = Session::register(cp.registry, "other", "other-1");
    other.add_route("other.test", "/", &backend.url());
    other.apply();
    backend.set_delay(Duration::from_millis(400));
    for i in 0..3 {
        assert_eq!(dps[i % 2].get("st.test", "/").status, 200);
    }
    backend.set_status(502);
    backend.set_delay(Duration::ZERO);
    assert_eq!(dps[1].get("st.test", "/").status, 502);
    let stats = wait_for(
        "stats from both data planes",
        Duration::from_secs(10),
        || {
            let st = s.json("STATS_GET", &r, "STATS_OK");
            (st["requests"] == 64).then_some(st)
        },
    );
    assert_eq!(stats["status_codes"]["200"], 63);
    assert_eq!(stats["status_codes"]["502"], 1);
    assert_eq!(stats["errors"], 1);
    assert_eq!(stats["bytes_sent"], 64 * 10);
    let p50 = stats["p50_latency_ms"].as_f64().unwrap();
    let p99 = stats["p99_latency_ms"].as_f64().unwrap();
    // The real p50 is ~40 ms and the real p99 (rank 64 of 64) ~400 ms; the
    // histogram is exact to 10 %, plus the proxy's own time.
    assert!((40.0..=40.0 * 1.1 + 25.0).contains(&p50), "p50 {p50}");
    assert!((400.0..=400.0 * 1.1 + 40.0).contains(&p99), "p99 {p99}");
    let all = s.json("STATS_GET", "ALL", "STATS_OK");
    assert_eq!(all[0]["requests"], 64);
}

#[test]
fn https_and_wss_backends_are_verified_against_trusted_authorities() {
    let cp = ControlPlane::start();
    let (secure, pem) = FakeBackend::start_tls("secure");
    let ca = process::tempdir::TempDir::new("portico-ca");
    let ca_file = ca.path().join("ca.pem");
    std::fs::write(&ca_file, &pem).unwrap();
    let trusting = DataPlane::spawn(
        &cp.grpc_url(),
        "dp-trusting",
        &["--upstream-ca", ca_file.to_str().unwrap()],
    );
    trusting.wait_ready();
    let mut s = Session::register(cp.registry, "tls", "tls-1");
    let port = secure.addr.port();
    s.add_route("tls.test", "/", &secure.url());
    s.add_route("wss.test", "/", &format!("wss://localhost:{port}"));
    s.apply();
    let r = trusting.get("tls.test", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "secure"));
    assert_eq!(trusting.get("wss.test", "/").body, "secure");
    let tested = s.json("BACKEND_TEST", &secure.url(), "BACKEND_OK");
    assert_eq!(
        (
            tested["status_code"].as_u64(),
            tested["tls_valid"].as_bool()
        ),
        (Some(200), Some(true))
    );
    assert!(
        trusting.proc.log_contains("backend test"),
        "BACKEND_TEST ran on the data plane"
    );

    // A data plane that does not trust the authority refuses the backend.
    let strict = DataPlane::start(&cp.grpc_url(), "dp-strict");
    let r = strict.get("tls.test", "/strict");
    assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.body);
    assert_eq!(
        secure.hits_for("/strict"),
        0,
        "no request completed over an unverified connection"
    );
}

#[test]
fn http2_option_speaks_h2_to_the_backend() {
    let (cp, dp) = cluster();
    let h2 = portico_e2e::h2::H2Backend::start();
    let mut s = Session::register(cp.registry, "h2", "h2-1");
    let r = s.add_route("h2.test", "/", &h2.url());
    assert_eq!(
        s.cmd("OPTIONS_SET", &format!("{r}|http2|true")),
        "OPTIONS_OK"
    );
    s.apply();
    let response = wait_for(
        "the h2 backend healthy and served",
        Duration::from_secs(10),
        || Some(dp.get("h2.test", "/")).filter(|r| r.status == 200),
    );
    assert_eq!(response.body, "HTTP/2.0");
    // Without the option the data plane speaks HTTP/1.1, which an h2-only
    // backend cannot answer.
    s.cmd("OPTIONS_REMOVE", &format!("{r}|http2"));
    s.apply();
    assert_ne!(dp.get("h2.test", "/").status, 200);
}

#[test]
fn a_client_going_away_is_not_a_backend_failure() {
    let (cp, dp) = cluster();
    let backend = FakeBackend::start("steady");
    let mut s = Session::register(cp.registry, "gone", "gone-1");
    let r = s.add_route("gone.test", "/", &backend.url());
    s.cmd("HEALTH_SET", &format!("{r}|/health|30s|5s"));
    assert_eq!(
        s.cmd("CIRCUIT_BREAKER_SET", &format!("{r}|1|30s|1")),
        "CIRCUIT_OK"
    );
    s.apply();
    backend.set_delay(Duration::from_millis(300));
    for _ in 0..3 {
        // Counted before the request is sent: it may reach the backend at once.
        let before = backend.hits_for("/slow");
        let mut raw = std::net::TcpStream::connect(dp.proxy).unwrap();
        std::io::Write::write_all(&mut raw, b"GET /slow HTTP/1.1\r\nHost: gone.test\r\n\r\n")
            .unwrap();
        wait_for(
            "the request at the backend",
            Duration::from_secs(20),
            || (backend.hits_for("/slow") > before).then_some(()),
        );
        drop(raw);
    }
    // Each request ends once its answer finds the client gone.
    wait_for("no request in flight", Duration::from_secs(10), || {
        (dp.counts()["in_flight"] == 0).then_some(())
    });
    backend.set_delay(Duration::ZERO);
    assert_eq!(
        dp.get("gone.test", "/ok").status,
        200,
        "the breaker (threshold 1) stayed closed"
    );
}

#[test]
fn connect_timeout_answers_504_when_the_backend_does_not_accept() {
    let (cp, dp) = cluster();
    // A listener with a backlog of one that never accepts: once the backlog
    // is full, new connections hang in SYN, which is what a dead host does.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let _fill: Vec<_> = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    let mut s = Session::register(cp.registry, "ct", "ct-1");
    let r = s.add_route("ct.test", "/", &format!("http://{addr}"));
    s.cmd("OPTIONS_SET", &format!("{r}|connect_timeout|300ms"));
    s.cmd("HEALTH_SET", &format!("{r}|/health|30s|10s"));
    s.apply();
    let started = Instant::now();
    let response = dp.get("ct.test", "/");
    assert_eq!(response.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn websocket_upgrades_are_proxied_both_ways() {
    let (cp, dp) = cluster();
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0)
                    && line != "\r\n"
                {
                    line.clear();
                }
                let mut writer = stream;
                let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                if std::io::Write::write_all(&mut writer, head.as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = Read::read(&mut reader, &mut buf) {
                    if n == 0 || std::io::Write::write_all(&mut writer, &buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut s = Session::register(cp.registry, "ws", "ws-1");
    let r = s.add_route("ws.test", "/", &format!("ws://{addr}"));
    s.cmd("HEALTH_SET", &format!("{r}|/health|30s|5s"));
    s.apply();
    let mut client = std::net::TcpStream::connect(dp.proxy).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(
        &mut client,
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            client.read(&mut byte).unwrap(),
            1,
            "connection closed in the response head"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for message in ["ping", "a longer frame of bytes"] {
        std::io::Write::write_all(&mut client, message.as_bytes()).unwrap();
        let mut echoed = vec![0u8; message.len()];
        client.read_exact(&mut echoed).unwrap();
        assert_eq!(
            echoed,
            message.as_bytes(),
            "bytes flow both ways after the upgrade"
        );
    }
}
