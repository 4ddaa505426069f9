//! DRAIN_* and MAINT_*: drains, maintenance targets and the probe rule.

use super::*;

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
