//! Sessions that come and go leave nothing behind: after a few hundred
//! register, route, apply, serve and shut down, every count the control
//! plane and the data plane keep per session or route is back where it was.

use std::time::Duration;

use portico_e2e::*;
use serde_json::Value;

fn counts(admin: std::net::SocketAddr) -> Value {
    let r = http_get(admin, "localhost", "/debug/counts").expect("GET /debug/counts");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).expect("counts json")
}

/// One deploy: a new instance with five routes, applied, one request
/// through the data plane, then CLIENT_SHUTDOWN. The home connection
/// subscribes (its events are not read); commands go over a second one.
fn deploy(cp: &ControlPlane, dp: &DataPlane, backend: &str, round: usize) {
    let service = format!("svc-{}", round % 50);
    let mut home = LineClient::connect(cp.registry);
    let id = home.register(&service, &format!("{service}-i{round}"));
    assert_eq!(home.send(&format!("SUBSCRIBE|{id}|all")), "SUBSCRIBE_OK");
    let mut c = LineClient::connect(cp.registry);
    for r in 0..5 {
        let reply = c.send(&format!(
            "ROUTE_ADD|{id}|h{r}.{service}.churn.test|/r{round}|{backend}|0"
        ));
        assert!(reply.starts_with("ROUTE_OK|"), "{reply}");
    }
    assert_eq!(c.send(&format!("CONFIG_APPLY|{id}")), "OK");
    let host = format!("h0.{service}.churn.test");
    assert_eq!(dp.get(&host, &format!("/r{round}")).status, 200);
    assert_eq!(c.send(&format!("CLIENT_SHUTDOWN|{id}")), "SHUTDOWN_OK");
}

#[test]
fn churned_sessions_leave_every_count_where_it_was() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-churn");
    let backend = FakeBackend::start("churn");
    // Warm-up: one deploy, and its stats reported, so lazily made state exists.
    deploy(&cp, &dp, &backend.url(), 0);
    let settled = |what: &str, check: &dyn Fn(&Value, &Value) -> bool| {
        wait_for(what, Duration::from_secs(15), || {
            let (c, d) = (counts(cp.admin), counts(dp.admin));
            check(&c, &d).then_some((c, d))
        })
    };
    // Removed routes leave the data plane's table at once; its probe tasks
    // follow within 100 ms and the last stats go with the next report (1 s).
    let idle = |c: &Value, d: &Value| {
        c["sessions"] == 0
            && c["telemetry_routes"] == 0
            && d["routes"] == 0
            && d["probes"] == 0
            && d["leftover_stats"] == 0
    };
    let (cp_before, dp_before) = settled("the warm-up to settle", &idle);
    for round in 1..=300 {
        deploy(&cp, &dp, &backend.url(), round);
    }
    let cp_keys = [
        "sessions",
        "instances",
        "tasks",
        "global_sessions",
        "global_routes",
        "owners",
        "telemetry_routes",
        "telemetry_health",
        "subscriptions",
        "fleet_members",
        "apply_waiters",
        "backend_tests",
        "breaker_resets",
    ];
    let dp_keys = ["routes", "runtime_routes", "runtime_backends", "probes"];
    // Connections close and their tasks end a moment after the last reply.
    let back = |c: &Value, d: &Value| {
        idle(c, d)
            && cp_keys.iter().all(|k| c[k] == cp_before[k])
            && dp_keys.iter().all(|k| d[k] == dp_before[k])
    };
    let (cp_after, dp_after) = wait_for("the churn to settle", Duration::from_secs(15), || {
        let (c, d) = (counts(cp.admin), counts(dp.admin));
        back(&c, &d).then_some((c, d))
    });
    println!("control plane after 300 sessions: {cp_after}\ndata plane: {dp_after}");
    for key in cp_keys {
        assert_eq!(
            cp_after[key], cp_before[key],
            "control plane {key}: {cp_after}"
        );
    }
    for key in dp_keys {
        assert_eq!(
            dp_after[key], dp_before[key],
            "data plane {key}: {dp_after}"
        );
    }
    // The version history is bounded, not per session: 301 applies and 301
    // shutdowns, 602 versions, all kept (the bound is 4096).
    assert_eq!(cp_after["history_versions"], 602);
}
