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

    // A backend that refuses connections: counted as a connect error.
    let gone = FakeBackend::start("gone");
    let url = gone.url();
    gone.stop();
    let r_gone = s.add_route("gone.test", "/", &url);
    s.apply();
    assert_eq!(dp.get("gone.test", "/").status, 502);
    let text = metrics(dp.admin);
    assert_eq!(
        sample(
            &text,
            "portico_upstream_errors_total",
            &[("route_id", &r_gone), ("kind", "connect")]
        ),
        Some(1.0),
        "{text}"
    );
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
