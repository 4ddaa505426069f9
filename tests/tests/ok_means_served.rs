//! `OK` means served, also across control-plane restarts and stream blips:
//! the control plane remembers its fleet, applies wait for members within
//! the fleet grace, and breaker transitions reach it the moment they happen.

use std::time::{Duration, Instant};

use portico_e2e::*;
use serde_json::Value;

fn plane(cp: &ControlPlane, node_id: &str) -> Option<Value> {
    dataplanes(cp).into_iter().find(|p| p["node_id"] == node_id)
}

/// The control plane's "data planes answered" log line for `version`.
fn answered(cp: &ControlPlane, version: u64) -> String {
    let needle = format!("version=Some({version})");
    wait_for("the apply's report", Duration::from_secs(5), || {
        cp.proc
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("data planes answered") && l.contains(&needle))
            .cloned()
    })
}

#[test]
fn the_first_apply_after_each_control_plane_restart_is_served_by_every_data_plane() {
    let mut cp = ControlPlane::start();
    let dps = [
        DataPlane::start(&cp.grpc_url(), "dp-a"),
        DataPlane::start(&cp.grpc_url(), "dp-b"),
    ];
    let backend = FakeBackend::start("restart");
    let session = LineClient::connect(cp.registry).register("restart", "restart-1");
    for round in 0..3 {
        cp.proc.kill();
        cp.start_again();
        let mut c = LineClient::connect(cp.registry);
        assert_eq!(c.send(&format!("RECONNECT|{session}")), "OK");
        let host = format!("r{round}.restart.test");
        let reply = c.send(&format!("ROUTE_ADD|{session}|{host}|/|{}|0", backend.url()));
        assert!(reply.starts_with("ROUTE_OK|"), "{reply}");
        let started = Instant::now();
        assert_eq!(c.send(&format!("CONFIG_APPLY|{session}")), "OK");
        println!(
            "round {round}: CONFIG_APPLY to OK {:?} after a control-plane restart, 2 data planes",
            started.elapsed()
        );
        // Exactly one request each, no polling: OK promised it is served.
        for (dp, name) in dps.iter().zip(["dp-a", "dp-b"]) {
            assert_eq!(
                dp.get(&host, "/").status,
                200,
                "round {round}: {host} not served by {name} right after OK"
            );
        }
    }
}

#[test]
fn an_apply_waits_for_a_data_plane_restarting_under_it() {
    let cp = ControlPlane::start();
    let a = DataPlane::start(&cp.grpc_url(), "dp-a");
    let mut b = DataPlane::start(&cp.grpc_url(), "dp-b");
    let backend = FakeBackend::start("blip");
    let mut s = Session::register(cp.registry, "blip", "blip-1");
    s.add_route("before.blip.test", "/", &backend.url());
    s.apply();
    b.proc.kill();
    s.add_route("during.blip.test", "/", &backend.url());
    let (registry, id) = (cp.registry, s.id.clone());
    let apply = std::thread::spawn(move || {
        LineClient::connect(registry).send(&format!("CONFIG_APPLY|{id}"))
    });
    wait_for("the commit of version 2", Duration::from_secs(10), || {
        cp.proc
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(" committed ") && l.contains("version=2"))
            .then_some(())
    });
    assert!(
        !apply.is_finished(),
        "OK must wait for dp-b, which lost its stream within the fleet grace"
    );
    b = DataPlane::spawn(&cp.grpc_url(), "dp-b", &[]);
    assert_eq!(apply.join().unwrap(), "OK");
    let report = answered(&cp, 2);
    assert!(
        report.contains("dp-a") && report.contains("dp-b") && report.contains("lagging=[]"),
        "{report}"
    );
    // The proxy listener binds on its own thread; the route is there already.
    b.wait_ready();
    assert_eq!(b.get("during.blip.test", "/").status, 200);
    assert_eq!(a.get("during.blip.test", "/").status, 200);
}

#[test]
fn an_apply_names_a_member_that_does_not_come_back_in_time() {
    let cp = ControlPlane::start_with(&["--apply-timeout", "1s", "--fleet-grace", "60s"]);
    let a = DataPlane::start(&cp.grpc_url(), "dp-a");
    let mut b = DataPlane::start(&cp.grpc_url(), "dp-b");
    let backend = FakeBackend::start("late");
    let mut s = Session::register(cp.registry, "late", "late-1");
    b.proc.kill();
    s.add_route("late.test", "/", &backend.url());
    let started = Instant::now();
    s.apply();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "OK came before the apply timeout, without dp-b: {:?}",
        started.elapsed()
    );
    assert_eq!(a.get("late.test", "/").status, 200);
    let report = answered(&cp, 1);
    assert!(report.contains(r#"lagging=["dp-b"]"#), "{report}");
    assert!(cp
        .proc
        .log_contains("apply timeout: data planes have not acknowledged"));
    let info = plane(&cp, "dp-b").expect("dp-b is still a member");
    assert_eq!(info["state"], "disconnected");
    assert_eq!(info["lag"], 1, "{info}");
}

#[test]
fn a_data_plane_away_longer_than_the_grace_leaves_the_fleet_and_rejoins_later() {
    let cp = ControlPlane::start_with(&["--fleet-grace", "1s"]);
    let watch = Watch::start(&cp, "member");
    let rx = &watch.events;
    // The watch stream opens asynchronously: start data planes until one
    // joining is seen on it.
    let mut early = Vec::new();
    wait_for("the watch stream", Duration::from_secs(10), || {
        early.push(DataPlane::start(
            &cp.grpc_url(),
            &format!("dp-early-{}", early.len()),
        ));
        rx.recv_timeout(Duration::from_millis(300)).ok()
    });
    let a = DataPlane::start(&cp.grpc_url(), "dp-a");
    let mut b = DataPlane::start(&cp.grpc_url(), "dp-b");
    b.proc.kill();
    let gone = wait_for("dp-b gone", Duration::from_secs(15), || {
        plane(&cp, "dp-b").filter(|p| p["state"] == "gone")
    });
    assert!(gone["last_seen"].as_str().unwrap().ends_with('Z'), "{gone}");
    assert!(cp.proc.log_contains("data plane left the fleet"));
    let mut seen = Vec::new();
    while !seen.contains(&("dp-b".to_string(), "gone".to_string())) {
        let event = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("member events for dp-b");
        seen.push((
            event["node_id"].as_str().unwrap().to_string(),
            event["state"].as_str().unwrap().to_string(),
        ));
    }
    let of_b: Vec<&str> = seen
        .iter()
        .filter(|(n, _)| n == "dp-b")
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(of_b, ["connected", "disconnected", "gone"]);

    // Applies no longer wait for it.
    let backend = FakeBackend::start("rest");
    let mut s = Session::register(cp.registry, "rest", "rest-1");
    s.add_route("rest.test", "/", &backend.url());
    s.apply();
    let report = answered(&cp, 1);
    assert!(
        report.contains("lagging=[]") && report.contains("gone=[]") && !report.contains("dp-b"),
        "{report}"
    );
    assert_eq!(a.get("rest.test", "/").status, 200);

    // Back later, it simply rejoins and catches up.
    b = DataPlane::start(&cp.grpc_url(), "dp-b");
    assert_eq!(b.get("rest.test", "/").status, 200);
    let back = plane(&cp, "dp-b").unwrap();
    assert_eq!(
        (back["state"].as_str(), back["acked_version"].as_u64()),
        (Some("connected"), Some(1))
    );
}

#[test]
fn a_breaker_transition_reaches_the_control_plane_and_subscribers_at_once() {
    let cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("trip");
    // The home connection hears events; commands go over a second one.
    let mut home = LineClient::connect(cp.registry);
    let id = home.register("trip", "trip-1");
    assert_eq!(
        home.send(&format!("SUBSCRIBE|{id}|circuit_breaker_changed")),
        "SUBSCRIBE_OK"
    );
    let mut c = LineClient::connect(cp.registry);
    let r = c.send(&format!("ROUTE_ADD|{id}|trip.test|/|{}|0", backend.url()));
    let r = r.strip_prefix("ROUTE_OK|").unwrap().to_string();
    c.send(&format!("HEALTH_SET|{id}|{r}|/health|30s|5s"));
    assert_eq!(
        c.send(&format!("CIRCUIT_BREAKER_SET|{id}|{r}|3|30s|1")),
        "CIRCUIT_OK"
    );
    assert_eq!(c.send(&format!("CONFIG_APPLY|{id}")), "OK");
    backend.set_status(500);
    for i in 1..=3 {
        assert_eq!(dp.get("trip.test", "/t").status, 500, "failure {i}");
    }
    // Periodic telemetry comes once a second; the transition must not wait for it.
    let status = wait_for(
        "the open breaker reported",
        Duration::from_millis(500),
        || {
            let status = json_after(
                &c.send(&format!("CIRCUIT_BREAKER_STATUS|{id}|{r}")),
                "CIRCUIT_STATUS_OK",
            );
            (status["state"] == "open").then_some(status)
        },
    );
    assert_eq!(status["failures"], 3);
    let event = home.read_line();
    let payload = event
        .strip_prefix("EVENT|circuit_breaker_changed|")
        .unwrap_or_else(|| panic!("an event line, got {event}"));
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["route_id"], r.as_str());
    assert_eq!(payload["backend"], backend.url());
    assert_eq!(payload["node_id"], "dp-1");
    assert_eq!(payload["state"], "open");
    assert_eq!(payload["failures"], 3);
    assert_eq!(dp.get("trip.test", "/t").status, 503);
}
