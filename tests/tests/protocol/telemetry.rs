//! STATS_GET, CIRCUIT_BREAKER_*, BACKEND_TEST and SUBSCRIBE events.

use super::*;

#[test]
fn stats_circuit_breaker_and_backend_test_shapes() {
    let cp = ControlPlane::start();
    let backend = FakeBackend::start("up");
    let mut s = Session::register(cp.registry, "st", "st-1");
    let r1 = s.add_route("st.test", "/", &backend.url());
    assert_eq!(
        s.json("STATS_GET", "", "STATS_OK"),
        json!([]),
        "no active routes yet"
    );
    s.apply();
    let one = s.json("STATS_GET", &r1, "STATS_OK");
    for key in [
        "route_id",
        "requests",
        "errors",
        "avg_latency_ms",
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "bytes_sent",
        "bytes_received",
        "status_codes",
    ] {
        assert!(one.get(key).is_some(), "STATS_GET lacks {key}: {one}");
    }
    assert_eq!(one["route_id"], r1.as_str());
    let all = s.json("STATS_GET", "ALL", "STATS_OK");
    assert_eq!(all.as_array().unwrap().len(), 1);
    let compressed = s.cmd("STATS_GET", "ALL|compressed");
    assert_eq!(
        gunzip_base64(compressed.strip_prefix("STATS_OK|").unwrap()),
        all
    );
    assert_eq!(s.cmd("STATS_GET", "r999"), "ERROR|route not found");
    assert_eq!(
        s.cmd("STATS_GET", "x|compressed"),
        "ERROR|invalid target \"x\": must be ALL or a route id"
    );

    let cb = s.json("CIRCUIT_BREAKER_STATUS", &r1, "CIRCUIT_STATUS_OK");
    for key in [
        "state",
        "failures",
        "last_failure",
        "next_attempt",
        "data_planes",
    ] {
        assert!(
            cb.get(key).is_some(),
            "CIRCUIT_BREAKER_STATUS lacks {key}: {cb}"
        );
    }
    assert_eq!(cb["state"], "closed");
    assert_eq!(s.cmd("CIRCUIT_BREAKER_RESET", &r1), "CIRCUIT_OK");
    assert_eq!(
        s.cmd("CIRCUIT_BREAKER_STATUS", "r999"),
        "ERROR|route not found"
    );
    assert_eq!(
        s.cmd("CIRCUIT_BREAKER_RESET", "ALL"),
        "ERROR|invalid route id \"ALL\""
    );

    let ok = s.json("BACKEND_TEST", &backend.url(), "BACKEND_OK");
    assert_eq!(
        (
            ok["reachable"].as_bool(),
            ok["status_code"].as_u64(),
            ok["tls_valid"].as_bool()
        ),
        (Some(true), Some(200), Some(false))
    );
    assert!(ok["response_time_ms"].as_u64().unwrap() < 5000);
    backend.stop();
    let fail = s.json("BACKEND_TEST", &backend.url(), "BACKEND_FAIL");
    assert_eq!(
        fail,
        json!({"reachable": false, "error": "connection refused"})
    );
    assert_eq!(
        s.cmd("BACKEND_TEST", "gopher://x"),
        "ERROR|invalid backend url \"gopher://x\": scheme must be http, https, ws or wss"
    );
    assert_eq!(
        s.cmd("BACKEND_TEST", ""),
        "ERROR|invalid format: expected BACKEND_TEST|session|backend_url"
    );
    let empty = format!("BACKEND_TEST|{}|", s.id);
    assert_eq!(
        s.client.send(&empty),
        "ERROR|invalid backend url \"\": empty"
    );
}

#[test]
fn events_are_delivered_home_in_order_and_only_when_subscribed() {
    let cp = ControlPlane::start();
    let mut watcher = Session::register(cp.registry, "w", "w-1");
    let mut other = Session::register(cp.registry, "o", "o-1");
    assert_eq!(
        watcher.cmd("SUBSCRIBE", "global_config_changed"),
        "SUBSCRIBE_OK"
    );
    assert_eq!(
        watcher.cmd("SUBSCRIBE", "backend_health_changed"),
        "SUBSCRIBE_OK"
    );
    assert_eq!(watcher.cmd("SUBSCRIBE", "cert_renewed"), "SUBSCRIBE_OK");
    assert_eq!(watcher.cmd("SUBSCRIBE", "weather"), "ERROR|invalid event type \"weather\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed, geo_blocked or all");
    assert_eq!(
        watcher.cmd("SUBSCRIBE", ""),
        "ERROR|invalid format: expected SUBSCRIBE|session|event_type"
    );
    let empty = format!("SUBSCRIBE|{}|", watcher.id);
    assert_eq!(watcher.client.send(&empty), "ERROR|invalid event type \"\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed, geo_blocked or all");
    other.add_route("o.test", "/", "http://127.0.0.1:1");
    other.apply();
    // The event arrives as a whole line before the reply to the next command.
    assert_eq!(watcher.cmd("PING", "").split('|').next(), Some("EVENT"));
    assert_eq!(watcher.client.read_line(), "PONG");
    assert_eq!(
        watcher.cmd("UNSUBSCRIBE", "global_config_changed"),
        "UNSUBSCRIBE_OK"
    );
    assert_eq!(watcher.cmd("UNSUBSCRIBE", "nope"), "ERROR|invalid event type \"nope\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed, geo_blocked or all");
    other.add_route("o2.test", "/", "http://127.0.0.1:1");
    other.apply();
    assert_eq!(
        watcher.cmd("PING", ""),
        "PONG",
        "no event after UNSUBSCRIBE"
    );
    assert_eq!(watcher.cmd("SUBSCRIBE", "all"), "SUBSCRIBE_OK");
    other.add_route("o3.test", "/", "http://127.0.0.1:1");
    other.apply();
    let event = watcher.cmd("PING", "");
    let (kind, payload) = event
        .strip_prefix("EVENT|")
        .unwrap()
        .split_once('|')
        .unwrap();
    assert_eq!(kind, "global_config_changed");
    assert!(
        serde_json::from_str::<Value>(payload).unwrap()["version"]
            .as_u64()
            .unwrap()
            >= 3
    );
    assert_eq!(watcher.client.read_line(), "PONG");
    // The other session, not subscribed, saw nothing.
    assert_eq!(other.cmd("PING", ""), "PONG");
}
