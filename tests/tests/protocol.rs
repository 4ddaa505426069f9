//! Conformance of the registry protocol against a real control plane (and a
//! data plane where a command reaches one): success shapes parsed as JSON,
//! error paths, ordering of events, isolation, take-over and expiry.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use portico_e2e::*;
use serde_json::{json, Value};

fn route_ids(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["route_id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn gunzip_base64(payload: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .expect("base64");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("gzip");
    serde_json::from_str(&text).expect("json")
}

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
fn routes_add_bulk_update_remove_list() {
    let cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "web", "web-1");
    let r1 = s.add_route("a.example.com", "/", "http://127.0.0.1:9001");
    assert_eq!(
        s.cmd("ROUTE_ADD", "a.example.com|/|http://127.0.0.1:9001|0"),
        format!("ROUTE_OK|{r1}"),
        "identical add returns the same id"
    );
    assert_eq!(
        s.cmd("ROUTE_ADD", "A.EXAMPLE.COM|/|http://127.0.0.1:9001|"),
        format!("ROUTE_OK|{r1}")
    );

    let bulk = s.json(
        "ROUTE_ADD_BULK",
        r#"[{"domains":["b.example.com"],"path":"/v1","backend_url":"http://127.0.0.1:9002","priority":5},{"domains":["c.example.com","*.c.example.com"],"path":"/","backend_url":"https://127.0.0.1:9443"}]"#,
        "ROUTE_BULK_OK",
    );
    assert_eq!(bulk.as_array().unwrap().len(), 2);
    assert!(bulk
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["status"] == "ok" && i["route_id"].as_str().unwrap().starts_with('r')));
    let r2 = bulk[0]["route_id"].as_str().unwrap().to_string();
    let r3 = bulk[1]["route_id"].as_str().unwrap().to_string();
    // All or nothing: a bad item stages none, and is named by index.
    let bad = s.cmd("ROUTE_ADD_BULK", r#"[{"domains":["d.example.com"],"path":"/","backend_url":"http://127.0.0.1:1"},{"domains":["e.example.com"],"path":"x","backend_url":"http://127.0.0.1:1"}]"#);
    assert_eq!(bad, "ERROR|item 1: invalid path \"x\": must start with /");
    assert_eq!(
        s.cmd("ROUTE_ADD_BULK", "[1,2"),
        "ERROR|invalid json_array: EOF while parsing a list at line 1 column 4"
    );
    assert_eq!(
        s.cmd("ROUTE_ADD_BULK", r#"[{"path":"/"}]"#),
        "ERROR|item 0: missing domains"
    );

    let list = s.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(
        route_ids(&list),
        vec![
            (r1.clone(), "staged".into()),
            (r2.clone(), "staged".into()),
            (r3.clone(), "staged".into())
        ]
    );
    let first = &list[0];
    for key in [
        "route_id",
        "id",
        "domains",
        "path",
        "backend",
        "backend_url",
        "priority",
        "status",
    ] {
        assert!(
            first.get(key).is_some(),
            "ROUTE_LIST item lacks {key}: {first}"
        );
    }
    assert_eq!(first["id"], first["route_id"]);
    assert_eq!(list[1]["priority"], 5);
    assert_eq!(
        list[2]["domains"],
        json!(["c.example.com", "*.c.example.com"])
    );
    s.apply();

    assert_eq!(
        s.cmd(
            "ROUTE_UPDATE",
            &format!("{r1}|backend_url|http://127.0.0.1:9009")
        ),
        "ROUTE_OK"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r2}|priority|7")),
        "ROUTE_OK"
    );
    assert_eq!(
        s.cmd(
            "ROUTE_UPDATE",
            &format!("{r2}|domains|b.example.com,bb.example.com")
        ),
        "ROUTE_OK"
    );
    assert_eq!(s.cmd("ROUTE_UPDATE", &format!("{r2}|path|/v2")), "ROUTE_OK");
    assert_eq!(s.cmd("ROUTE_REMOVE", &r3), "ROUTE_OK");
    let r4 = s.add_route("f.example.com", "/", "ws://127.0.0.1:9010");
    let list = s.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(
        route_ids(&list),
        vec![
            (r1.clone(), "modified".into()),
            (r2.clone(), "modified".into()),
            (r3.clone(), "pending_removal".into()),
            (r4.clone(), "staged".into())
        ]
    );
    assert_eq!(list[0]["backend_url"], "http://127.0.0.1:9009");
    assert_eq!(list[1]["path"], "/v2");
    assert_eq!(list[1]["priority"], 7);

    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r1}|weight|3")),
        "ERROR|invalid field \"weight\": must be backend_url, priority, domains or path"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r1}|priority|x")),
        "ERROR|invalid priority \"x\": must be an integer between -1000000000 and 1000000000"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r3}|priority|1")),
        "ERROR|route not found",
        "pending removal"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", "r999|priority|1"),
        "ERROR|route not found"
    );
    assert_eq!(s.cmd("ROUTE_REMOVE", "r999"), "ERROR|route not found");
    assert_eq!(s.cmd("ROUTE_REMOVE", "x1"), "ERROR|invalid route id \"x1\"");
    assert_eq!(
        s.cmd("ROUTE_REMOVE", &r3),
        "ERROR|route not found",
        "already pending removal"
    );
    s.apply();
    assert_eq!(
        s.cmd("ROUTE_REMOVE", &r3),
        "ERROR|route not found",
        "removed route"
    );

    let compressed = s.cmd("ROUTE_LIST", "compressed");
    let list = gunzip_base64(compressed.strip_prefix("ROUTE_LIST_OK|").unwrap());
    assert_eq!(
        route_ids(&list),
        vec![
            (r1, "active".into()),
            (r2, "active".into()),
            (r4, "active".into())
        ]
    );
    assert_eq!(
        s.cmd("ROUTE_LIST", "gzip"),
        "ERROR|invalid field \"gzip\": expected \"compressed\" or nothing"
    );
}

#[test]
fn uncompressed_responses_are_capped_at_64_kib() {
    let cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "big", "big-1");
    // Lines are capped at 16 KiB, so the routes go in batches.
    for batch in 0..8 {
        let items: Vec<Value> = (0..50)
            .map(|i| json!({"domains": [format!("host-{batch}-{i}.a-rather-long-domain-name.example.com")], "path": "/some/longer/path/prefix", "backend_url": "http://127.0.0.1:9000"}))
            .collect();
        let reply = s.cmd("ROUTE_ADD_BULK", &Value::Array(items).to_string());
        assert!(
            reply.starts_with("ROUTE_BULK_OK|"),
            "{}",
            &reply[..80.min(reply.len())]
        );
    }
    assert_eq!(
        s.cmd("ROUTE_LIST", ""),
        "ERROR|response too large; use compressed"
    );
    let compressed = s.cmd("ROUTE_LIST", "compressed");
    assert_eq!(
        gunzip_base64(compressed.strip_prefix("ROUTE_LIST_OK|").unwrap())
            .as_array()
            .unwrap()
            .len(),
        400
    );
}

#[test]
fn staged_settings_arrive_at_the_data_plane_intact() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let mut s = Session::register(cp.registry, "api", "api-1");
    let r1 = s.add_route("api.test", "/", "http://127.0.0.1:9001");
    let r2 = s.add_route("api.test", "/admin", "http://127.0.0.1:9002");
    let ok = |s: &mut Session, name: &str, rest: &str, code: &str| {
        assert_eq!(s.cmd(name, rest), code, "{name}|{rest}")
    };
    ok(
        &mut s,
        "HEADERS_SET",
        "ALL|X-Frame-Options|DENY",
        "HEADERS_OK",
    );
    ok(
        &mut s,
        "HEADERS_SET",
        &format!("{r2}|X-Frame-Options|SAMEORIGIN"),
        "HEADERS_OK",
    );
    ok(&mut s, "HEADERS_SET", "ALL|X-Temp|1", "HEADERS_OK");
    ok(&mut s, "HEADERS_REMOVE", "ALL|x-temp", "HEADERS_OK");
    ok(&mut s, "OPTIONS_SET", "ALL|timeout|30s", "OPTIONS_OK");
    ok(
        &mut s,
        "OPTIONS_SET",
        &format!("{r1}|retries|3"),
        "OPTIONS_OK",
    );
    ok(
        &mut s,
        "OPTIONS_SET",
        &format!("{r1}|websocket|true"),
        "OPTIONS_OK",
    );
    ok(
        &mut s,
        "OPTIONS_SET",
        &format!("{r1}|compression|on"),
        "OPTIONS_OK",
    );
    ok(
        &mut s,
        "OPTIONS_SET",
        "ALL|connect_timeout|500ms",
        "OPTIONS_OK",
    );
    ok(&mut s, "OPTIONS_SET", "ALL|http2|false", "OPTIONS_OK");
    ok(
        &mut s,
        "OPTIONS_SET",
        "ALL|health_check_interval|10",
        "OPTIONS_OK",
    );
    ok(
        &mut s,
        "OPTIONS_SET",
        "ALL|health_check_timeout|2s",
        "OPTIONS_OK",
    );
    ok(
        &mut s,
        "OPTIONS_REMOVE",
        "ALL|health_check_timeout",
        "OPTIONS_OK",
    );
    ok(
        &mut s,
        "HEALTH_SET",
        &format!("{r1}|/healthz|10s|5s"),
        "HEALTH_OK",
    );
    ok(
        &mut s,
        "RATELIMIT_SET",
        &format!("{r1}|100|1m"),
        "RATELIMIT_OK",
    );
    ok(&mut s, "RATELIMIT_SET", "ALL|1000|1h", "RATELIMIT_OK");
    ok(&mut s, "CIRCUIT_BREAKER_SET", "ALL|5|30s|3", "CIRCUIT_OK");

    // Errors, each naming what is wrong, staging nothing.
    let errors = [
        (
            "HEADERS_SET",
            "ALL|X Bad|v".to_string(),
            "ERROR|invalid header name \"X Bad\"",
        ),
        (
            "HEADERS_SET",
            "ALL|X-A|bad\u{7}bell".to_string(),
            "ERROR|invalid header value: control characters are not allowed",
        ),
        (
            "HEADERS_SET",
            "r999|X-A|v".to_string(),
            "ERROR|route not found",
        ),
        (
            "HEADERS_REMOVE",
            "nope|X-A".to_string(),
            "ERROR|invalid target \"nope\": must be ALL or a route id",
        ),
        (
            "HEADERS_REMOVE",
            "r999|X-A".to_string(),
            "ERROR|route not found",
        ),
        (
            "OPTIONS_SET",
            "ALL|turbo|on".to_string(),
            "ERROR|unknown option \"turbo\"",
        ),
        (
            "OPTIONS_SET",
            "ALL|timeout|-5s".to_string(),
            "ERROR|invalid value \"-5s\" for option timeout: negative duration \"-5s\"",
        ),
        (
            "OPTIONS_SET",
            "ALL|retries|6".to_string(),
            "ERROR|invalid value \"6\" for option retries: must be an integer from 0 to 5",
        ),
        (
            "OPTIONS_REMOVE",
            "ALL|turbo".to_string(),
            "ERROR|unknown option \"turbo\"",
        ),
        (
            "OPTIONS_REMOVE",
            "r999|timeout".to_string(),
            "ERROR|route not found",
        ),
        (
            "HEALTH_SET",
            format!("{r1}|/h|5s|10s"),
            "ERROR|invalid timeout: must be shorter than interval",
        ),
        (
            "HEALTH_SET",
            format!("{r1}|h|10s|5s"),
            "ERROR|invalid path \"h\": must start with /",
        ),
        (
            "HEALTH_SET",
            "r999|/h|10s|5s".to_string(),
            "ERROR|route not found",
        ),
        (
            "RATELIMIT_SET",
            format!("{r1}|-1|1m"),
            "ERROR|invalid requests \"-1\": must be a positive integer",
        ),
        (
            "RATELIMIT_SET",
            format!("{r1}|10|0s"),
            "ERROR|invalid window: duration \"0s\" must be positive",
        ),
        (
            "CIRCUIT_BREAKER_SET",
            "ALL|0|30s|3".to_string(),
            "ERROR|invalid threshold \"0\": must be a positive integer",
        ),
        (
            "CIRCUIT_BREAKER_SET",
            "ALL|5|30s|many".to_string(),
            "ERROR|invalid half_open_requests \"many\": must be a positive integer",
        ),
    ];
    for (name, rest, expected) in &errors {
        assert_eq!(s.cmd(name, rest), *expected, "{name}|{rest}");
    }

    let diff = s.json("CONFIG_DIFF", "", "DIFF_OK");
    assert_eq!(diff["routes"]["added"].as_array().unwrap().len(), 2);
    assert_eq!(diff["headers"], json!({"added": 2, "removed": 0}));
    assert_eq!(diff["options"]["modified"], 7);
    assert_eq!(diff["health"]["modified"], 1);
    assert_eq!(diff["ratelimit"]["modified"], 2);
    assert_eq!(diff["circuit_breaker"]["modified"], 1);
    assert_eq!(
        dp.config()["routes"],
        json!([]),
        "nothing staged reaches a data plane"
    );
    s.apply();
    let diff = s.json("CONFIG_DIFF", "", "DIFF_OK");
    assert_eq!(diff["options"]["modified"], 0);

    let config = dp.config();
    let routes = config["routes"].as_array().unwrap();
    let one = routes
        .iter()
        .find(|r| r["route_id"] == r1.as_str())
        .unwrap();
    let two = routes
        .iter()
        .find(|r| r["route_id"] == r2.as_str())
        .unwrap();
    assert_eq!(
        one["response_headers"],
        json!([["X-Frame-Options", "DENY"]])
    );
    assert_eq!(
        two["response_headers"],
        json!([["X-Frame-Options", "SAMEORIGIN"]]),
        "route-level overrides ALL"
    );
    assert_eq!(
        one["options"],
        json!({"timeout": "30000ms", "connect_timeout": "500ms", "websocket": "true", "compression": "true", "http2": "false", "retries": "3", "health_check_interval": "10000ms"})
    );
    assert_eq!(
        two["options"],
        json!({"timeout": "30000ms", "connect_timeout": "500ms", "http2": "false", "health_check_interval": "10000ms"})
    );
    assert_eq!(
        one["health"],
        json!({"path": "/healthz", "interval_ms": 10000, "timeout_ms": 5000})
    );
    assert!(two["health"].is_null());
    assert_eq!(
        one["rate_limit"],
        json!({"requests": 100, "window_ms": 60000})
    );
    assert_eq!(
        two["rate_limit"],
        json!({"requests": 1000, "window_ms": 3600000})
    );
    assert_eq!(
        one["circuit_breaker"],
        json!({"threshold": 5, "timeout_ms": 30000, "half_open_requests": 3})
    );
    assert_eq!(one["service"], "api");
    assert_eq!(one["session_id"], s.id.as_str());
}

#[test]
fn validate_rollback_diff_and_partial_apply() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("b");
    let mut s = Session::register(cp.registry, "shop", "shop-1");
    let r1 = s.add_route("shop.test", "/", &backend.url());
    assert_eq!(s.cmd("CONFIG_VALIDATE", ""), "OK");
    assert_eq!(
        dp.get("shop.test", "/").status,
        404,
        "VALIDATE applies nothing"
    );
    assert_eq!(s.cmd("CONFIG_ROLLBACK", ""), "OK");
    assert_eq!(s.json("ROUTE_LIST", "", "ROUTE_LIST_OK"), json!([]));
    assert_eq!(s.cmd("CONFIG_APPLY", ""), "OK", "an empty apply is fine");

    let r1b = s.add_route("shop.test", "/", &backend.url());
    assert_ne!(r1, r1b, "ids are never reused");
    s.cmd("HEADERS_SET", "ALL|X-Shop|yes");
    let diff = s.json("CONFIG_DIFF", "", "DIFF_OK");
    assert_eq!(diff["routes"]["added"][0]["route_id"], r1b.as_str());
    assert_eq!(diff["routes"]["removed"], json!([]));
    assert_eq!(diff["routes"]["modified"], json!([]));
    assert_eq!(diff["headers"]["added"], 1);
    // Session-level headers can go alone; the routes stay staged.
    assert_eq!(s.cmd("CONFIG_APPLY_PARTIAL", "headers"), "OK");
    assert_eq!(dp.get("shop.test", "/").status, 404, "routes still staged");
    assert_eq!(s.json("CONFIG_DIFF", "", "DIFF_OK")["headers"]["added"], 0);
    s.cmd("HEALTH_SET", &format!("{r1b}|/h|2s|1s"));
    assert_eq!(
        s.cmd("CONFIG_APPLY_PARTIAL", "health"),
        format!(
            "ERROR|route {r1b}: health check set for a route that is not active after this apply"
        )
    );
    assert_eq!(s.cmd("CONFIG_APPLY_PARTIAL", "routes,health"), "OK");
    assert_eq!(dp.get("shop.test", "/").status, 200);
    assert_eq!(dp.config()["routes"][0]["health"]["path"], "/h");
    assert_eq!(
        dp.config()["routes"][0]["response_headers"],
        json!([["X-Shop", "yes"]])
    );
    assert_eq!(s.cmd("CONFIG_APPLY_PARTIAL", "routes,bogus"), "ERROR|invalid scope \"bogus\": must be routes, headers, options, health, ratelimit or circuit_breaker");
    assert_eq!(
        s.cmd("CONFIG_APPLY_PARTIAL", ""),
        "ERROR|invalid format: expected CONFIG_APPLY_PARTIAL|session|scopes"
    );
    let empty = format!("CONFIG_APPLY_PARTIAL|{}|", s.id);
    assert_eq!(s.client.send(&empty), "ERROR|invalid scope \"\": must be routes, headers, options, health, ratelimit or circuit_breaker");

    // Settings for a route being removed are refused, and nothing changes.
    s.cmd("OPTIONS_SET", &format!("{r1b}|retries|1"));
    s.cmd("ROUTE_REMOVE", &r1b);
    let err =
        format!("ERROR|route {r1b}: options set for a route that is not active after this apply");
    assert_eq!(s.cmd("CONFIG_VALIDATE", ""), err);
    assert_eq!(s.cmd("CONFIG_APPLY", ""), err);
    assert_eq!(dp.get("shop.test", "/").status, 200);
    s.cmd("OPTIONS_REMOVE", &format!("{r1b}|retries"));
    s.apply();
    assert_eq!(dp.get("shop.test", "/").status, 404);
}

#[test]
fn staged_changes_expire() {
    let cp = ControlPlane::start_with(&["--staged-ttl", "1s"]);
    let mut s = Session::register(cp.registry, "slow", "slow-1");
    s.add_route("slow.test", "/", "http://127.0.0.1:9");
    s.cmd("HEADERS_SET", "ALL|X-A|1");
    assert_eq!(s.json("SESSION_INFO", "", "SESSION_OK")["routes_staged"], 1);
    wait_for("staged expiry", Duration::from_secs(10), || {
        (s.json("ROUTE_LIST", "", "ROUTE_LIST_OK") == json!([])).then_some(())
    });
    assert_eq!(s.json("CONFIG_DIFF", "", "DIFF_OK")["headers"]["added"], 0);
    assert_eq!(s.cmd("PING", ""), "PONG", "the session itself lives on");
}

#[test]
fn another_service_is_refused_and_the_owner_named() {
    let cp = ControlPlane::start();
    let mut billing = Session::register(cp.registry, "billing", "b-1");
    let mut shop = Session::register(cp.registry, "shop", "s-1");
    billing.add_route("api.example.com", "/v1", "http://127.0.0.1:1");
    billing.apply();
    let id = shop.add_route("api.example.com", "/v1/", "http://127.0.0.1:2");
    let other = shop.add_route("api.example.com", "/v2", "http://127.0.0.1:2");
    let expected = format!("ERROR|route {id}: api.example.com/v1/ is owned by service billing");
    assert_eq!(shop.cmd("CONFIG_VALIDATE", ""), expected);
    assert_eq!(shop.cmd("CONFIG_APPLY", ""), expected);
    shop.cmd("ROUTE_REMOVE", &id);
    shop.apply();
    let list = shop.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(route_ids(&list), vec![(other, "active".into())]);
}

#[test]
fn sessions_cannot_see_each_others_routes() {
    let cp = ControlPlane::start();
    let mut a = Session::register(cp.registry, "a", "a-1");
    let mut b = Session::register(cp.registry, "b", "b-1");
    let theirs = a.add_route("a.test", "/", "http://127.0.0.1:1");
    a.apply();
    let commands = [
        ("ROUTE_REMOVE", theirs.clone()),
        ("ROUTE_UPDATE", format!("{theirs}|priority|9")),
        ("HEADERS_SET", format!("{theirs}|X-A|1")),
        ("OPTIONS_SET", format!("{theirs}|retries|1")),
        ("HEALTH_SET", format!("{theirs}|/h|2s|1s")),
        ("RATELIMIT_SET", format!("{theirs}|5|1s")),
        ("CIRCUIT_BREAKER_SET", format!("{theirs}|5|1s|1")),
        ("CIRCUIT_BREAKER_STATUS", theirs.clone()),
        ("CIRCUIT_BREAKER_RESET", theirs.clone()),
        ("STATS_GET", theirs.clone()),
        ("MAINT_ENTER", theirs.clone()),
        ("MAINT_EXIT", theirs.clone()),
    ];
    for (name, rest) in &commands {
        let unknown = rest.replace(&theirs, "r987654");
        assert_eq!(b.cmd(name, rest), "ERROR|route not found", "{name}");
        assert_eq!(
            b.cmd(name, &unknown),
            "ERROR|route not found",
            "{name} with an unknown id"
        );
    }
    assert_eq!(b.json("ROUTE_LIST", "", "ROUTE_LIST_OK"), json!([]));
    assert_eq!(
        route_ids(&a.json("ROUTE_LIST", "", "ROUTE_LIST_OK")),
        vec![(theirs, "active".into())]
    );
}

#[test]
fn drain_start_status_cancel_and_completion_event() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let mut s = Session::register(cp.registry, "d", "d-1");
    s.add_route("d.test", "/", "http://127.0.0.1:1");
    s.apply();
    assert_eq!(s.cmd("DRAIN_STATUS", ""), "ERROR|no drain in progress");
    assert_eq!(s.cmd("DRAIN_CANCEL", ""), "ERROR|no drain in progress");
    assert_eq!(
        s.cmd("DRAIN_START", "0"),
        "ERROR|invalid duration: duration \"0\" must be positive"
    );
    assert_eq!(
        s.cmd("DRAIN_START", "-3s"),
        "ERROR|invalid duration: negative duration \"-3s\""
    );
    let reply = s.cmd("DRAIN_START", "60");
    let ends = reply.strip_prefix("DRAIN_OK|").unwrap();
    assert!(ends.len() == 20 && ends.ends_with('Z'), "{reply}");
    let status = s.json("DRAIN_STATUS", "", "DRAIN_STATUS_OK");
    assert_eq!(status["active"], true);
    assert_eq!(status["duration_seconds"], 60.0);
    assert!(status["traffic_percent"].as_f64().unwrap() > 90.0);
    assert!(status["remaining_seconds"].as_f64().unwrap() > 50.0);
    assert!(status["elapsed_seconds"].as_f64().unwrap() < 10.0);
    assert!(status["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        dp.config()["routes"][0]["drain"]["duration_ms"],
        60000,
        "drain reaches the data plane at once"
    );
    assert_eq!(s.cmd("DRAIN_CANCEL", ""), "DRAIN_OK");
    assert!(dp.config()["routes"][0]["drain"].is_null());
    assert_eq!(s.cmd("DRAIN_STATUS", ""), "ERROR|no drain in progress");

    assert_eq!(s.cmd("SUBSCRIBE", "drain_completed"), "SUBSCRIBE_OK");
    assert!(s.cmd("DRAIN_START", "1s").starts_with("DRAIN_OK|"));
    let event = s.client.read_line();
    let payload = json_after(event.strip_prefix("EVENT|").unwrap(), "drain_completed");
    assert_eq!(payload["session_id"], s.id.as_str());
    let status = s.json("DRAIN_STATUS", "", "DRAIN_STATUS_OK");
    assert_eq!(
        (
            status["traffic_percent"].as_f64(),
            status["remaining_seconds"].as_f64()
        ),
        (Some(0.0), Some(0.0))
    );
}

#[test]
fn maintenance_enter_exit_every_target_and_the_probe_rule() {
    let cp = ControlPlane::start_with(&["--maintenance-probe-limit", "2s"]);
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let own = FakeBackend::start("own");
    let page = FakeBackend::start("maintenance");
    let mut c = LineClient::connect(cp.registry);
    // Registered from 127.0.0.1 with the maintenance page's port.
    let id = c.register_with_port("m", "m-1", page.addr.port());
    let mut s = Session { client: c, id };
    let r1 = s.add_route("m.test", "/", &own.url());
    let r2 = s.add_route("m.test", "/admin", &own.url());
    let r3 = s.add_route("other.test", "/", &own.url());
    s.apply();

    // Empty url: the registering address and maintenance port.
    assert_eq!(s.cmd("MAINT_ENTER", "ALL"), "ACK");
    assert_eq!(s.client.read_line(), "MAINT_OK|ALL");
    let status = s.json("MAINT_STATUS", "", "MAINT_STATUS_OK");
    assert_eq!(status["in_maintenance"], json!([r1, r2, r3]));
    assert_eq!(status["maintenance_backend"], page.url().as_str());
    assert!(status["entered_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        dp.config()["routes"][0]["maintenance"]["backend_url"],
        page.url().as_str()
    );
    assert_eq!(s.cmd("MAINT_EXIT", "ALL"), "ACK");
    assert_eq!(s.client.read_line(), "MAINT_OK|ALL");
    assert_eq!(
        s.json("MAINT_STATUS", "", "MAINT_STATUS_OK"),
        json!({"in_maintenance": [], "maintenance_backend": null, "entered_at": null})
    );

    // Path, domain and route-id targets, with an explicit url.
    assert_eq!(
        s.cmd("MAINT_ENTER", &format!("/admin|{}", page.url())),
        "ACK"
    );
    assert_eq!(s.client.read_line(), "MAINT_OK|/admin");
    assert_eq!(
        s.json("MAINT_STATUS", "", "MAINT_STATUS_OK")["in_maintenance"],
        json!([r2])
    );
    assert_eq!(
        s.cmd("MAINT_ENTER", &format!("other.test|{}", page.url())),
        "ACK"
    );
    assert_eq!(s.client.read_line(), "MAINT_OK|other.test");
    assert_eq!(
        s.json("MAINT_STATUS", "", "MAINT_STATUS_OK")["in_maintenance"],
        json!([r2, r3])
    );
    assert_eq!(s.cmd("MAINT_EXIT", &format!("{r2},{r3}")), "ACK");
    assert_eq!(s.client.read_line(), format!("MAINT_OK|{r2},{r3}"));

    // Errors.
    assert_eq!(
        s.cmd("MAINT_ENTER", "/nothing"),
        "ERROR|no active route of this session matches target /nothing"
    );
    assert_eq!(
        s.cmd("MAINT_ENTER", "nothing.test"),
        "ERROR|no active route of this session matches target nothing.test"
    );
    assert_eq!(
        s.cmd("MAINT_ENTER", "r1|ftp://x"),
        "ERROR|invalid backend url \"ftp://x\": scheme must be http, https, ws or wss"
    );
    assert_eq!(s.cmd("MAINT_ENTER", "r999"), "ERROR|route not found");

    // An unreachable maintenance page: ACK at once, then the timeout error.
    page.stop();
    assert_eq!(s.cmd("MAINT_ENTER", &format!("{r1}|{}", page.url())), "ACK");
    assert_eq!(
        s.client.read_line(),
        "ERROR|timeout waiting for maintenance page to become reachable"
    );
    own.stop();
    assert_eq!(s.cmd("MAINT_EXIT", &r1), "ACK");
    assert_eq!(
        s.client.read_line(),
        "ERROR|timeout waiting for backend to become reachable"
    );
}

#[test]
fn maintenance_without_a_port_uses_the_built_in_page_and_txn_follows() {
    let cp = ControlPlane::start();
    let backend = FakeBackend::start("p");
    let mut s = Session::register(cp.registry, "p", "p-1");
    s.add_route("p.test", "/", &backend.url());
    s.apply();
    assert_eq!(s.cmd("MAINT_ENTER", "txn:7|ALL"), "ACK|txn:7");
    assert_eq!(s.client.read_line(), "MAINT_OK|txn:7|ALL");
    assert_eq!(
        s.json("MAINT_STATUS", "", "MAINT_STATUS_OK")["maintenance_backend"],
        Value::Null
    );
    // nc style: the connection that asked stays open for its MAINT_OK.
    let mut c = LineClient::connect(cp.registry);
    c.send_raw(format!("MAINT_EXIT|{}|ALL\n", s.id).as_bytes());
    c.shutdown_write();
    assert_eq!(c.read_line(), "ACK");
    assert_eq!(c.read_line(), "MAINT_OK|ALL");
    assert!(c.is_closed());
}

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
    assert_eq!(watcher.cmd("SUBSCRIBE", "weather"), "ERROR|invalid event type \"weather\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed or all");
    assert_eq!(
        watcher.cmd("SUBSCRIBE", ""),
        "ERROR|invalid format: expected SUBSCRIBE|session|event_type"
    );
    let empty = format!("SUBSCRIBE|{}|", watcher.id);
    assert_eq!(watcher.client.send(&empty), "ERROR|invalid event type \"\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed or all");
    other.add_route("o.test", "/", "http://127.0.0.1:1");
    other.apply();
    // The event arrives as a whole line before the reply to the next command.
    assert_eq!(watcher.cmd("PING", "").split('|').next(), Some("EVENT"));
    assert_eq!(watcher.client.read_line(), "PONG");
    assert_eq!(
        watcher.cmd("UNSUBSCRIBE", "global_config_changed"),
        "UNSUBSCRIBE_OK"
    );
    assert_eq!(watcher.cmd("UNSUBSCRIBE", "nope"), "ERROR|invalid event type \"nope\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed or all");
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
    assert_eq!(route["session_id"], new.id.as_str());
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
fn transaction_ids_are_echoed_on_every_kind_of_reply() {
    let cp = ControlPlane::start();
    let mut c = LineClient::connect(cp.registry);
    let ack = c.send("REGISTER|txn:1|x|x-1|0");
    assert!(ack.starts_with("ACK|txn:1|x-1-"), "{ack}");
    let id = ack.rsplit('|').next().unwrap().to_string();
    assert_eq!(c.send(&format!("PING|{id}|txn:2")), "PONG|txn:2");
    assert_eq!(
        c.send(&format!(
            "ROUTE_ADD|{id}|txn:42|a.test|/|http://127.0.0.1:1|0"
        )),
        "ROUTE_OK|txn:42|r1"
    );
    assert_eq!(c.send(&format!("CONFIG_APPLY|{id}|txn:43")), "OK|txn:43");
    assert_eq!(
        c.send(&format!("ROUTE_REMOVE|{id}|txn:44|r77")),
        "ERROR|txn:44|route not found"
    );
    assert_eq!(c.send(&format!("ROUTE_ADD|{id}|txn:45|a.test")), "ERROR|txn:45|invalid format: expected ROUTE_ADD|session|domains|path|backend_url|priority (last fields optional)");
    assert_eq!(c.send("PING|nobody|txn:46"), "ERROR|txn:46|invalid session");
    assert_eq!(c.send("RECONNECT|nobody|txn:47"), "REREGISTER|txn:47");
    assert!(c
        .send(&format!("SESSION_INFO|{id}|txn:48"))
        .starts_with("SESSION_OK|txn:48|{"));
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

/// At least 60 malformed lines, each answered with ERROR while the
/// connection stays usable and the session's state does not change.
#[test]
fn malformed_lines_change_nothing() {
    let cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "mal", "mal-1");
    let r1 = s.add_route("mal.test", "/", "http://127.0.0.1:1");
    s.apply();
    s.add_route("staged.test", "/", "http://127.0.0.1:2");
    let before = (
        s.json("ROUTE_LIST", "", "ROUTE_LIST_OK"),
        s.json("CONFIG_DIFF", "", "DIFF_OK"),
    );
    let id = s.id.clone();
    let lines: Vec<String> = [
        "NOPE", "NOPE|x", "|", "||||", "REGISTER", "REGISTER|a", "REGISTER|a|b", "REGISTER|a|b|x", "REGISTER|a|b|-1",
        "REGISTER|a|b|65536", "REGISTER|a|b|1|[]", "REGISTER|a|b|1|\"s\"", "REGISTER|a|b|1|{", "REGISTER||b|1", "REGISTER|a||1",
        "REGISTER|a/b|c|1", "REGISTER|a|b|1|{}|extra", "PING", "PING|S|extra", "SESSION_INFO", "ROUTE_ADD|S", "ROUTE_ADD|S|a.com|/",
        "ROUTE_ADD|S||/|http://a|0", "ROUTE_ADD|S|a.com,|/|http://a|0", "ROUTE_ADD|S|a.com|/|http://a|1.5", "ROUTE_ADD|S|a.com|/|http://a|0|x",
        "ROUTE_ADD|S|a.com|/|mailto:x|0", "ROUTE_ADD|S|a.com|/|http://u:p@a|0", "ROUTE_ADD|S|a.com|/ x|http://a|0", "ROUTE_ADD|S|bad_host!|/|http://a|0",
        "ROUTE_ADD_BULK|S|", "ROUTE_ADD_BULK|S|[]", "ROUTE_ADD_BULK|S|{\"a\":1}", "ROUTE_ADD_BULK|S|[{\"domains\":[],\"path\":\"/\",\"backend_url\":\"http://a\"}]",
        "ROUTE_ADD_BULK|S|[{\"domains\":[\"a.com\"],\"path\":\"/\",\"backend_url\":\"http://a\",\"color\":1}]",
        "ROUTE_UPDATE|S|r1|priority", "ROUTE_UPDATE|S|r1|path|nope", "ROUTE_UPDATE|S|r1|domains|", "ROUTE_UPDATE|S|one|priority|1",
        "ROUTE_REMOVE|S", "ROUTE_REMOVE|S|r", "ROUTE_LIST|S|compressed|x", "HEADERS_SET|S|ALL|X-A", "HEADERS_SET|S|ALL||v",
        "HEADERS_SET|S|ALL|X:A|v", "HEADERS_SET|S|ALL|Transfer-Encoding|chunked", "HEADERS_REMOVE|S|ALL", "OPTIONS_SET|S|ALL|timeout",
        "OPTIONS_SET|S|ALL|timeout|soon", "OPTIONS_SET|S|ALL|http2|2", "OPTIONS_REMOVE|S|ALL", "HEALTH_SET|S|r1|/h|1s",
        "HEALTH_SET|S|r1|/h|x|1s", "HEALTH_SET|S|ALL|/h|2s|1s", "RATELIMIT_SET|S|r1|10", "RATELIMIT_SET|S|r1|ten|1m",
        "CIRCUIT_BREAKER_SET|S|r1|1|1s", "CIRCUIT_BREAKER_SET|S|r1|1|x|1", "CIRCUIT_BREAKER_STATUS|S", "CIRCUIT_BREAKER_RESET|S|",
        "CONFIG_APPLY_PARTIAL|S", "CONFIG_APPLY|S|extra", "STATS_GET|S|r1|zip", "STATS_GET|S|a|b|c", "BACKEND_TEST|S", "DRAIN_START|S",
        "DRAIN_START|S|1y", "DRAIN_START|S|1.5s", "MAINT_ENTER|S", "MAINT_ENTER|S|r1|x", "MAINT_EXIT|S|", "SUBSCRIBE|S",
        "UNSUBSCRIBE|S|a|b", "DRAIN_STATUS|S|x",
    ]
    .iter()
    .map(|l| l.replace("|S", &format!("|{id}")))
    .collect();
    assert!(lines.len() >= 60, "{} lines", lines.len());
    for line in &lines {
        let reply = s.client.send(line);
        assert!(reply.starts_with("ERROR|"), "{line:?} answered {reply:?}");
        assert!(
            reply.len() > "ERROR|".len() + 5,
            "{line:?}: message too short: {reply}"
        );
        assert_eq!(s.cmd("PING", ""), "PONG", "after {line:?}");
    }
    let after = (
        s.json("ROUTE_LIST", "", "ROUTE_LIST_OK"),
        s.json("CONFIG_DIFF", "", "DIFF_OK"),
    );
    assert_eq!(before, after, "bad lines changed the session");
    assert_eq!(s.json("SESSION_INFO", "", "SESSION_OK")["routes_active"], 1);
    assert_eq!(
        s.cmd("ROUTE_REMOVE", &r1),
        "ROUTE_OK",
        "the route is still there"
    );
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
