//! REGISTER, SESSION_INFO, PING, RECONNECT, take-over, SHUTDOWN, and unknown sessions.

use super::*;

#[test]
fn register_session_info_ping_and_reconnect() {
    let cp = ControlPlane::start();
    let mut c = LineClient::connect(cp.registry);
    let ack = c.send("REGISTER|billing|billing-1|9000|{\"version\":\"1.2\"}");
    let id = ack.strip_prefix("ACK|").unwrap().to_string();
    let hex = id.strip_prefix("billing-1-").unwrap();
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let info = json_after(&c.send(&format!("SESSION_INFO|{id}")), "SESSION_OK");
    assert_eq!(info["session_id"], id.as_str());
    assert_eq!(info["service_name"], "billing");
    assert_eq!(info["instance_name"], "billing-1");
    assert_eq!(info["metadata"], json!({"version": "1.2"}));
    assert_eq!(
        (
            info["routes_active"].as_u64(),
            info["routes_staged"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(info["last_apply"].is_null());
    for field in ["connected_at", "last_activity"] {
        let t = info[field].as_str().unwrap();
        assert!(t.ends_with('Z') && t.contains('T'), "{field}: {t}");
    }
    assert!(info["uptime_seconds"].is_u64());
    assert_eq!(c.send(&format!("PING|{id}")), "PONG");
    assert_eq!(c.send(&format!("RECONNECT|{id}")), "OK");
    // Empty and {} metadata are both fine.
    assert!(c
        .send("REGISTER|billing|billing-2|0|")
        .starts_with("ACK|billing-2-"));
    assert!(c
        .send("REGISTER|billing|billing-3|0")
        .starts_with("ACK|billing-3-"));
    // Errors.
    assert_eq!(
        c.send("REGISTER|billing|b|9000|{nope"),
        "ERROR|invalid metadata: key must be a string at line 1 column 2"
    );
    assert_eq!(
        c.send("REGISTER|bill ing|b|9000|{}"),
        "ERROR|invalid service name \"bill ing\": use 1-128 of A-Z a-z 0-9 . _ -"
    );
    // Long input is clipped to 80 characters in the message.
    assert_eq!(
        c.send(&format!("REGISTER|b|{}|0", "i".repeat(129))),
        format!(
            "ERROR|invalid instance name \"{}\": use 1-128 of A-Z a-z 0-9 . _ -",
            "i".repeat(80)
        )
    );
    assert_eq!(
        c.send("REGISTER|b|i|port"),
        "ERROR|invalid maintenance_port \"port\": must be 0-65535"
    );
    assert_eq!(c.send("REGISTER|b|i"), "ERROR|invalid format: expected REGISTER|service|instance|maintenance_port|metadata_json (last fields optional)");
    let big = format!("{{\"k\":\"{}\"}}", "x".repeat(4100));
    assert_eq!(
        c.send(&format!("REGISTER|b|i|0|{big}")),
        "ERROR|invalid metadata: larger than 4096 bytes"
    );
    assert_eq!(c.send("SESSION_INFO|nope"), "ERROR|invalid session");
    assert_eq!(c.send("PING|"), "ERROR|invalid session");
    assert_eq!(c.send("RECONNECT|gone-123"), "REREGISTER");
}

#[test]
fn take_over_inherits_routes_and_ends_the_old_session() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("t");
    let mut old = Session::register(cp.registry, "svc", "svc-1");
    let r1 = old.add_route("t.test", "/", &backend.url());
    old.cmd("HEADERS_SET", "ALL|X-Kept|yes");
    old.apply();
    assert_eq!(
        old.cmd("SUBSCRIBE", "global_config_changed"),
        "SUBSCRIBE_OK"
    );
    old.add_route("staged.test", "/", &backend.url());
    let mut new = Session::register(cp.registry, "svc", "svc-1");
    assert_ne!(old.id, new.id);
    let list = new.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(
        route_ids(&list),
        vec![(r1.clone(), "active".into())],
        "active routes inherited, staged ones not"
    );
    assert_eq!(old.cmd("PING", ""), "ERROR|invalid session");
    assert_eq!(dp.get("t.test", "/").status, 200, "no gap in service");
    let route = &dp.config()["routes"][0];
    assert_eq!(route["owner"], handle("svc-1", &new.id).as_str());
    assert_eq!(route["response_headers"], json!([["X-Kept", "yes"]]));
    assert_eq!(new.cmd("ROUTE_REMOVE", &r1), "ROUTE_OK");
    // The subscription was inherited: the new session hears of its own
    // commit before the reply, and of other sessions' commits.
    let event = new.cmd("CONFIG_APPLY", "");
    assert!(event.starts_with("EVENT|global_config_changed|"), "{event}");
    assert_eq!(new.client.read_line(), "OK");
    assert_eq!(dp.get("t.test", "/").status, 404);
    // A different instance is a separate session, not a take-over.
    let mut other = Session::register(cp.registry, "svc", "svc-2");
    assert_eq!(new.cmd("PING", ""), "PONG");
    assert_eq!(other.cmd("PING", ""), "PONG");
    other.add_route("o.test", "/", &backend.url());
    other.apply();
    let event = new.cmd("PING", "");
    assert!(event.starts_with("EVENT|global_config_changed|"), "{event}");
    assert_eq!(new.client.read_line(), "PONG");
}

#[test]
fn shutdown_is_sent_home_on_sigterm() {
    let mut cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "bye", "bye-1");
    assert_eq!(s.cmd("PING", ""), "PONG");
    let status = cp.proc.terminate().expect("exit status");
    assert_eq!(s.client.read_line(), "SHUTDOWN");
    assert!(status.success(), "{status}");
}

/// Every command that names a session: with an unknown session it answers
/// `invalid session` (RECONNECT: `REREGISTER`), and with extra fields it
/// answers the format error naming its fields.
#[test]
fn every_session_command_refuses_unknown_sessions_and_extra_fields() {
    let cp = ControlPlane::start();
    let mut c = LineClient::connect(cp.registry);
    let valid = [
        "RECONNECT|S", "PING|S", "SESSION_INFO|S", "CLIENT_SHUTDOWN|S",
        "ROUTE_ADD|S|a.test|/|http://127.0.0.1:1|0",
        "ROUTE_ADD_BULK|S|[{\"domains\":[\"a.test\"],\"path\":\"/\",\"backend_url\":\"http://127.0.0.1:1\"}]",
        "ROUTE_UPDATE|S|r1|priority|1", "ROUTE_REMOVE|S|r1", "ROUTE_LIST|S|compressed",
        "HEADERS_SET|S|ALL|X-A|1", "HEADERS_REMOVE|S|ALL|X-A", "OPTIONS_SET|S|ALL|retries|1", "OPTIONS_REMOVE|S|ALL|retries",
        "HEALTH_SET|S|r1|/h|2s|1s", "RATELIMIT_SET|S|ALL|1|1s", "CIRCUIT_BREAKER_SET|S|ALL|1|1s|1",
        "CIRCUIT_BREAKER_STATUS|S|r1", "CIRCUIT_BREAKER_RESET|S|r1", "CONFIG_VALIDATE|S", "CONFIG_APPLY|S",
        "CONFIG_ROLLBACK|S", "CONFIG_DIFF|S", "CONFIG_APPLY_PARTIAL|S|routes", "STATS_GET|S|ALL|compressed",
        "BACKEND_TEST|S|http://127.0.0.1:1", "DRAIN_START|S|1s", "DRAIN_STATUS|S", "DRAIN_CANCEL|S",
        "MAINT_ENTER|S|ALL|http://127.0.0.1:1", "MAINT_EXIT|S|ALL", "MAINT_STATUS|S", "SUBSCRIBE|S|all", "UNSUBSCRIBE|S|all",
    ];
    assert_eq!(valid.len(), 33);
    for line in valid {
        let name = line.split('|').next().unwrap();
        let unknown = line.replacen("|S", "|nobody-0123", 1);
        let expected = if name == "RECONNECT" {
            "REREGISTER"
        } else {
            "ERROR|invalid session"
        };
        assert_eq!(c.send(&unknown), expected, "{unknown}");
        let extra = format!("{unknown}|x|y|z");
        let reply = c.send(&extra);
        assert!(
            reply.starts_with(&format!("ERROR|invalid format: expected {name}|session")),
            "{extra} answered {reply}"
        );
    }
}
