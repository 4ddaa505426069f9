//! CONFIG_VALIDATE, CONFIG_ROLLBACK, CONFIG_DIFF, partial applies and staged-change expiry.

use super::*;

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
