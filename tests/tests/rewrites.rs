//! Request rewrites (issue 37): `strip_prefix`, `add_prefix` and
//! `preserve_host`, on both forwarding paths, seen by a real backend.

use std::time::Duration;

use portico_e2e::{wait_for, ControlPlane, DataPlane, FakeBackend, Session};

/// The request line and `Host` the backend saw for a request to `host`
/// `path` (a health probe that came in between is skipped: asked again).
fn seen(dp: &DataPlane, backend: &FakeBackend, host: &str, path: &str) -> (String, String) {
    for _ in 0..5 {
        let r = dp.get(host, path);
        assert_eq!(r.status, 200, "{host}{path}: {}", r.body);
        let head = backend.last_request.lock().unwrap().clone();
        let line = head.lines().next().unwrap_or_default().to_string();
        let seen_host = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("host: ")
                    .or_else(|| l.strip_prefix("Host: "))
            })
            .unwrap_or_default()
            .to_string();
        let probe = line == "GET / HTTP/1.1" && seen_host != host;
        if !probe {
            return (line, seen_host);
        }
    }
    panic!("only probes seen for {host}{path}");
}

fn ok(reply: String) {
    assert!(reply.starts_with("OPTION"), "{reply}");
}

#[test]
fn prefixes_come_off_and_go_on_and_the_host_is_kept_or_replaced() {
    let cp = ControlPlane::start();
    let fast = DataPlane::start(&cp.grpc_url(), "rewrite-fast");
    let slow = DataPlane::spawn(&cp.grpc_url(), "rewrite-proxy", &["--fast-path", "off"]);
    slow.wait_ready();
    let backend = FakeBackend::start("rw");
    let mut s = Session::register(cp.registry, "rw", "rw-1");
    let strip = s.add_route("rw.test", "/api", &backend.url());
    let both = s.add_route("rw.test", "/old", &backend.url());
    let plain = s.add_route("rw.test", "/", &backend.url());
    ok(s.cmd("OPTIONS_SET", &format!("{strip}|strip_prefix|true")));
    ok(s.cmd("OPTIONS_SET", &format!("{both}|strip_prefix|on")));
    ok(s.cmd("OPTIONS_SET", &format!("{both}|add_prefix|/v2/")));
    ok(s.cmd("OPTIONS_SET", &format!("{both}|preserve_host|false")));
    let bad = s.cmd("OPTIONS_SET", &format!("{plain}|add_prefix|v2"));
    assert!(
        bad.starts_with("ERROR") && bad.contains("add_prefix"),
        "{bad}"
    );
    s.apply();
    wait_for("the routes served", Duration::from_secs(10), || {
        (fast.get("rw.test", "/api/x").status == 200).then_some(())
    });
    let port = backend.url().rsplit(':').next().unwrap().to_string();
    for dp in [&fast, &slow] {
        assert_eq!(
            seen(dp, &backend, "rw.test", "/api/orders?id=7"),
            ("GET /orders?id=7 HTTP/1.1".into(), "rw.test".into())
        );
        assert_eq!(seen(dp, &backend, "rw.test", "/api").0, "GET / HTTP/1.1");
        assert_eq!(
            seen(dp, &backend, "rw.test", "/old/items?q=a"),
            (
                "GET /v2/items?q=a HTTP/1.1".into(),
                format!("127.0.0.1:{port}")
            )
        );
        assert_eq!(
            seen(dp, &backend, "rw.test", "/plain/api/x").0,
            "GET /plain/api/x HTTP/1.1"
        );
    }
}
