//! Staged settings (headers, options, health, rate limits, breakers) as the data plane receives them.

use super::*;

#[test]
fn staged_settings_arrive_at_the_data_plane_intact() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let mut s = Session::register(cp.registry, "api", "api-1");
    let r1 = s.add_route("api.test", "/", "http://127.0.0.1:9001");
    let r2 = s.add_route("api.test", "/admin", "http://127.0.0.1:9002");
    stage_every_kind_of_setting(&mut s, &r1, &r2);
    bad_settings_are_refused_and_stage_nothing(&mut s, &r1);
    the_diff_counts_what_is_staged(&mut s);
    assert_eq!(
        dp.config()["routes"],
        json!([]),
        "nothing staged reaches a data plane"
    );
    s.apply();
    let diff = s.json("CONFIG_DIFF", "", "DIFF_OK");
    assert_eq!(diff["options"]["modified"], 0);
    the_data_plane_serves_them(&dp, &s, &r1, &r2);
}

/// Headers, options, a probe, rate limits and a breaker, for ALL and per
/// route, some set then removed.
fn stage_every_kind_of_setting(s: &mut Session, r1: &str, r2: &str) {
    let staged = [
        (
            "HEADERS_SET",
            "ALL|X-Frame-Options|DENY".to_string(),
            "HEADERS_OK",
        ),
        (
            "HEADERS_SET",
            format!("{r2}|X-Frame-Options|SAMEORIGIN"),
            "HEADERS_OK",
        ),
        ("HEADERS_SET", "ALL|X-Temp|1".to_string(), "HEADERS_OK"),
        ("HEADERS_REMOVE", "ALL|x-temp".to_string(), "HEADERS_OK"),
        ("OPTIONS_SET", "ALL|timeout|30s".to_string(), "OPTIONS_OK"),
        ("OPTIONS_SET", format!("{r1}|retries|3"), "OPTIONS_OK"),
        ("OPTIONS_SET", format!("{r1}|websocket|true"), "OPTIONS_OK"),
        ("OPTIONS_SET", format!("{r1}|compression|on"), "OPTIONS_OK"),
        (
            "OPTIONS_SET",
            "ALL|connect_timeout|500ms".to_string(),
            "OPTIONS_OK",
        ),
        ("OPTIONS_SET", "ALL|http2|false".to_string(), "OPTIONS_OK"),
        (
            "OPTIONS_SET",
            "ALL|health_check_interval|10".to_string(),
            "OPTIONS_OK",
        ),
        (
            "OPTIONS_SET",
            "ALL|health_check_timeout|2s".to_string(),
            "OPTIONS_OK",
        ),
        (
            "OPTIONS_REMOVE",
            "ALL|health_check_timeout".to_string(),
            "OPTIONS_OK",
        ),
        ("HEALTH_SET", format!("{r1}|/healthz|10s|5s"), "HEALTH_OK"),
        ("RATELIMIT_SET", format!("{r1}|100|1m"), "RATELIMIT_OK"),
        ("RATELIMIT_SET", "ALL|1000|1h".to_string(), "RATELIMIT_OK"),
        (
            "CIRCUIT_BREAKER_SET",
            "ALL|5|30s|3".to_string(),
            "CIRCUIT_OK",
        ),
    ];
    for (name, rest, code) in &staged {
        assert_eq!(s.cmd(name, rest), *code, "{name}|{rest}");
    }
}

/// Errors, each naming what is wrong, staging nothing.
fn bad_settings_are_refused_and_stage_nothing(s: &mut Session, r1: &str) {
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
}

fn the_diff_counts_what_is_staged(s: &mut Session) {
    let diff = s.json("CONFIG_DIFF", "", "DIFF_OK");
    assert_eq!(diff["routes"]["added"].as_array().unwrap().len(), 2);
    assert_eq!(diff["headers"], json!({"added": 2, "removed": 0}));
    assert_eq!(diff["options"]["modified"], 7);
    assert_eq!(diff["health"]["modified"], 1);
    assert_eq!(diff["ratelimit"]["modified"], 2);
    assert_eq!(diff["circuit_breaker"]["modified"], 1);
}

/// Route-level settings override ALL, options arrive in canonical form.
fn the_data_plane_serves_them(dp: &DataPlane, s: &Session, r1: &str, r2: &str) {
    let config = dp.config();
    let routes = config["routes"].as_array().unwrap();
    let one = routes.iter().find(|r| r["route_id"] == r1).unwrap();
    let two = routes.iter().find(|r| r["route_id"] == r2).unwrap();
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
    assert_eq!(one["owner"], handle("api-1", &s.id).as_str());
    assert!(!one.to_string().contains(&s.id), "{one}");
}
