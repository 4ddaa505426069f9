//! What operators see: Prometheus metrics on both planes, checked by
//! promtool and counted exactly.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use portico_e2e::{http_get, wait_for, ControlPlane, DataPlane, FakeBackend, Session};

fn metrics(addr: std::net::SocketAddr) -> String {
    let r = http_get(addr, "localhost", "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        r.header("content-type")
    );
    r.body
}

/// The value of the sample `name{labels…}` (labels in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                && rest.matches('=').count() == labels.len()
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// `promtool check metrics` accepts the page (lint problems fail too).
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed by scripts/setup.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn data_plane_metrics_count_each_request_once_by_class() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-metrics");
    let ok = FakeBackend::start("ok");
    let failing = FakeBackend::start("failing");
    failing.set_status(503);
    let mut s = Session::register(cp.registry, "shop", "shop-1");
    let r_ok = s.add_route("ok.test", "/", &ok.url());
    let r_fail = s.add_route("fail.test", "/", &failing.url());
    let r_limited = s.add_route("limited.test", "/", &ok.url());
    assert_eq!(
        s.cmd("RATELIMIT_SET", &format!("{r_limited}|2|1m")),
        "RATELIMIT_OK"
    );
    s.apply();

    for _ in 0..7 {
        assert_eq!(dp.get("ok.test", "/").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(dp.get("fail.test", "/x").status, 503);
    }
    let limited: Vec<u16> = (0..5).map(|_| dp.get("limited.test", "/").status).collect();
    assert_eq!(limited, vec![200, 200, 429, 429, 429]);
    assert_eq!(dp.get("nowhere.test", "/").status, 404);

    let text = metrics(dp.admin);
    promtool_accepts(&text);
    let requests = |route: &str, service: &str, code: &str| {
        sample(
            &text,
            "portico_requests_total",
            &[("route_id", route), ("service", service), ("code", code)],
        )
    };
    assert_eq!(requests(&r_ok, "shop", "2xx"), Some(7.0), "{text}");
    assert_eq!(requests(&r_ok, "shop", "5xx"), Some(0.0));
    assert_eq!(requests(&r_fail, "shop", "5xx"), Some(3.0));
    assert_eq!(requests(&r_limited, "shop", "2xx"), Some(2.0));
    assert_eq!(requests(&r_limited, "shop", "4xx"), Some(3.0));
    assert_eq!(
        requests("", "", "4xx"),
        Some(1.0),
        "no route: route_id=\"\""
    );
    assert_eq!(
        sample(
            &text,
            "portico_rate_limited_total",
            &[("route_id", &r_limited)]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "portico_request_duration_seconds_count",
            &[("route_id", &r_ok), ("service", "shop")]
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &text,
            "portico_backend_up",
            &[("route_id", &r_ok), ("backend", &ok.url())]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "portico_config_version", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "portico_control_plane_connected", &[]),
        Some(1.0)
    );
    assert!(sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));

    // A backend that refuses connections: counted as a connect error. It
    // goes away only after its route's first probe found it up, or that
    // probe (run at once) could mark it down first and the request would
    // be answered 503 without trying it.
    let gone = FakeBackend::start("gone");
    let url = gone.url();
    let r_gone = s.add_route("gone.test", "/", &url);
    // Probed every 2 s: the request below comes well before the next probe.
    assert_eq!(
        s.cmd("HEALTH_SET", &format!("{r_gone}|/|2s|500ms")),
        "HEALTH_OK"
    );
    s.apply();
    wait_for(
        "the first probe to find it up",
        Duration::from_secs(10),
        || {
            let text = metrics(dp.admin);
            (sample(
                &text,
                "portico_backend_up",
                &[("route_id", &r_gone), ("backend", &url)],
            ) == Some(1.0))
            .then_some(())
        },
    );
    gone.stop();
    assert_eq!(dp.get("gone.test", "/").status, 502);
    // A page is reused for up to a second.
    wait_for("the connect error counted", Duration::from_secs(5), || {
        let text = metrics(dp.admin);
        (sample(
            &text,
            "portico_upstream_errors_total",
            &[("route_id", &r_gone), ("kind", "connect")],
        ) == Some(1.0))
        .then_some(())
    });
    wait_for("the probe marks it down", Duration::from_secs(40), || {
        let text = metrics(dp.admin);
        (sample(
            &text,
            "portico_backend_up",
            &[("route_id", &r_gone), ("backend", &url)],
        ) == Some(0.0))
        .then_some(())
    });
}

#[test]
fn control_plane_metrics_follow_sessions_commands_and_the_fleet() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-cp-metrics");
    let backend = FakeBackend::start("b");
    let mut s = Session::register(cp.registry, "web", "web-1");
    s.add_route("a.test", "/", &backend.url());
    s.apply();
    assert_eq!(s.cmd("ROUTE_REMOVE", "r999"), "ERROR|route not found");
    let mut away = Session::register(cp.registry, "web", "web-2");
    assert_eq!(away.cmd("PING", ""), "PONG");
    drop(away.client);
    assert_eq!(
        portico_e2e::one_shot(cp.registry, "NOSUCH|x"),
        "ERROR|unknown command: NOSUCH"
    );

    let text = wait_for(
        "the detached session counted",
        Duration::from_secs(10),
        || {
            let text = metrics(cp.admin);
            (sample(&text, "portico_sessions", &[("state", "detached")]) == Some(1.0))
                .then_some(text)
        },
    );
    promtool_accepts(&text);
    assert_eq!(
        sample(&text, "portico_sessions", &[("state", "connected")]),
        Some(1.0)
    );
    let commands = |command: &str, result: &str| {
        sample(
            &text,
            "portico_commands_total",
            &[("command", command), ("result", result)],
        )
    };
    assert_eq!(commands("REGISTER", "ok"), Some(2.0), "{text}");
    assert_eq!(commands("ROUTE_ADD", "ok"), Some(1.0));
    assert_eq!(commands("CONFIG_APPLY", "ok"), Some(1.0));
    assert_eq!(commands("ROUTE_REMOVE", "error"), Some(1.0));
    assert_eq!(commands("unknown", "error"), Some(1.0));
    assert_eq!(sample(&text, "portico_config_version", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "portico_dataplanes", &[("state", "connected")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "portico_dataplanes", &[("state", "gone")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "portico_dataplane_acked_version",
            &[("node_id", "dp-cp-metrics")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "portico_apply_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert!(sample(&text, "portico_commit_duration_seconds_count", &[]).is_some_and(|n| n >= 1.0));
    drop(dp);
}

#[test]
fn the_access_log_has_a_json_line_per_request_and_reopens_on_sighup() {
    let dir = portico_e2e::process::tempdir::TempDir::new("portico-access");
    let path = dir.path().join("access.log");
    let cp = ControlPlane::start();
    let mut dp = DataPlane::spawn(
        &cp.grpc_url(),
        "dp-access",
        &["--access-log", path.to_str().unwrap()],
    );
    dp.wait_ready();
    let backend = FakeBackend::start("logged");
    let mut s = Session::register(cp.registry, "shop", "shop-1");
    let r = s.add_route("log.test", "/", &backend.url());
    s.apply();

    let given = portico_e2e::http_request(
        dp.proxy,
        "log.test",
        "/items?page=2",
        &[("X-Request-Id", "client-id-42")],
    )
    .unwrap();
    assert_eq!(given.header("x-request-id"), Some("client-id-42"));
    assert!(backend
        .last_request
        .lock()
        .unwrap()
        .to_ascii_lowercase()
        .contains("x-request-id: client-id-42"));
    let generated = portico_e2e::http_request(
        dp.proxy,
        "log.test",
        "/",
        &[("X-Request-Id", "bad id with spaces")],
    )
    .unwrap();
    let id = generated.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(backend.last_request.lock().unwrap().contains(&id));
    assert_eq!(dp.get("nowhere.test", "/").status, 404);

    let lines: Vec<serde_json::Value> = wait_for("three lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        (lines.len() == 3).then_some(lines)
    });
    let first = &lines[0];
    for field in [
        "time",
        "client",
        "host",
        "method",
        "path",
        "query",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream",
        "upstream_duration_ms",
        "route_id",
        "service",
        "request_id",
    ] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
    assert_eq!(first["host"], "log.test");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/items");
    assert_eq!(first["query"], "page=2");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes_out"], "logged".len());
    assert_eq!(first["upstream"], backend.addr.to_string());
    assert_eq!(first["route_id"], r.as_str());
    assert_eq!(first["service"], "shop");
    assert_eq!(first["request_id"], "client-id-42");
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        first["upstream_duration_ms"].as_f64().unwrap() <= first["duration_ms"].as_f64().unwrap()
    );
    assert_eq!(lines[1]["request_id"], id.as_str());
    assert_eq!(lines[2]["status"], 404);
    assert!(lines[2]["route_id"].is_null() && lines[2]["upstream"].is_null());

    // logrotate: the file is moved, SIGHUP, and the next line starts a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    dp.proc.signal("HUP");
    wait_for("the reopen", Duration::from_secs(5), || {
        dp.proc
            .log_contains("reopening the access log")
            .then_some(())
    });
    assert_eq!(dp.get("log.test", "/after").status, 200);
    wait_for("a line in the new file", Duration::from_secs(5), || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|t| t.contains("\"/after\""))
    });
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        3
    );
    assert!(
        dp.proc.exited().is_none(),
        "SIGHUP does not stop the data plane"
    );
}

#[test]
fn a_full_access_log_buffer_drops_lines_and_counts_them_without_slowing_requests() {
    let dir = portico_e2e::process::tempdir::TempDir::new("portico-fifo");
    let fifo = dir.path().join("stuck.log");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // A FIFO nobody reads: the writer blocks, so the queue fills.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cp = ControlPlane::start();
    let dp = DataPlane::spawn(
        &cp.grpc_url(),
        "dp-stuck-log",
        &[
            "--access-log",
            fifo.to_str().unwrap(),
            "--access-log-buffer",
            "4",
        ],
    );
    dp.wait_ready();
    let backend = FakeBackend::start("fast");
    let mut s = Session::register(cp.registry, "shop", "shop-1");
    s.add_route("fast.test", "/", &backend.url());
    s.apply();
    let started = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(dp.get("fast.test", "/").status, 200);
    }
    let took = started.elapsed();
    let text = metrics(dp.admin);
    let dropped = sample(&text, "portico_access_log_dropped_total", &[]).unwrap_or(0.0);
    assert!(dropped >= 45.0, "dropped {dropped}\n{text}");
    assert!(took < Duration::from_secs(10), "50 requests took {took:?}");
    eprintln!("50 requests with a stuck access log: {took:?}, {dropped} lines dropped");
}
