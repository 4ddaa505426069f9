//! Certificates from a real ACME server (Pebble): a routed domain gets one
//! with HTTP-01 answered by the data plane, verified against Pebble's root;
//! it is renewed when it looks near expiry; issuance survives a control
//! plane killed midway; a CA that is down changes nothing on HTTP; with
//! replicas, one orders and another takes over when it dies.

use std::net::SocketAddr;
use std::time::Duration;

use portico_e2e::acme::Pebble;
use portico_e2e::dns::free_port;
use portico_e2e::edge::{curl_https, served_serial};
use portico_e2e::etcd::Etcd;
use portico_e2e::process::tempdir::TempDir;
use portico_e2e::{ctl, wait_for, ControlPlane, DataPlane, FakeBackend, Session};

/// Issuance takes a few ACME round trips; Pebble validates at once here.
const ISSUANCE: Duration = Duration::from_secs(60);

struct Stack {
    dir: TempDir,
    cp: ControlPlane,
    dp: DataPlane,
    tls: SocketAddr,
    backend: FakeBackend,
}

/// A data plane on `http_port` (Pebble's httpPort) with a TLS listener, and
/// a control plane with `cp_args`.
fn stack(http_port: u16, cp_args: &[String]) -> Stack {
    let dir = TempDir::new("portico-acme");
    let args: Vec<&str> = cp_args.iter().map(String::as_str).collect();
    let cp = ControlPlane::start_with(&args);
    let mut dp = DataPlane::spawn_on(
        &cp.grpc_url(),
        "acme-dp",
        &format!("127.0.0.1:{http_port}"),
        &["--listen-tls", "127.0.0.1:0"],
    );
    let tls = dp.proc.listening("tls");
    dp.wait_ready();
    Stack {
        dir,
        cp,
        dp,
        tls,
        backend: FakeBackend::start("acme-site"),
    }
}

/// The ACME certificate the operators' list shows for `domain`, if any.
fn acme_cert(cp: &ControlPlane, domain: &str) -> Option<serde_json::Value> {
    let listed: serde_json::Value = serde_json::from_str(&ctl(cp, &["certs", "--json"])).ok()?;
    listed["certificates"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == format!("acme:{domain}"))
        .cloned()
}

#[test]
fn a_routed_domain_gets_a_certificate_from_pebble_that_verifies_and_is_renewed() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port, &[("PEBBLE_VA_NOSLEEP", "1")]);
    let mut s = stack(http_port, &pebble.cp_args());
    let mut session = Session::register(s.cp.registry, "shop", "shop-1");
    assert_eq!(session.cmd("SUBSCRIBE", "cert_renewed"), "SUBSCRIBE_OK");
    session.add_route("acme.test", "/", &s.backend.url());
    // OK does not wait for issuance: HTTP serves at once.
    session.apply();
    assert_eq!(s.dp.get("acme.test", "/").status, 200);

    let cert = wait_for("the ACME certificate", ISSUANCE, || {
        acme_cert(&s.cp, "acme.test")
    });
    assert_eq!(cert["source"], "acme");
    assert_eq!(cert["domains"], serde_json::json!(["acme.test"]));
    let event = session.client.read_line();
    let payload: serde_json::Value = serde_json::from_str(
        event
            .strip_prefix("EVENT|cert_renewed|")
            .unwrap_or_else(|| panic!("{event}")),
    )
    .unwrap();
    assert_eq!(payload["domains"], serde_json::json!(["acme.test"]));
    assert_eq!(payload["source"], "acme");

    // It verifies against Pebble's root, over HTTP/2.
    let root = s.dir.path().join("pebble-root.pem");
    pebble.write_root(&root);
    let got = curl_https(s.tls, "acme.test", "/", &root, &[]);
    assert_eq!((got.code, got.out.as_str()), (0, "200 2"), "{}", got.err);
    let first = served_serial(s.tls, "acme.test", &root).unwrap();
    assert_eq!(cert["serial"], first);
    // The challenge answers are withdrawn once issued.
    assert!(s.dp.config()["certificates"].as_array().unwrap().len() == 1);

    // Made to look near expiry (renewing earlier than its whole lifetime):
    // the restarted control plane renews it.
    s.cp.proc.terminate();
    let mut args = pebble.cp_args();
    args.extend(["--acme-renew-before".to_string(), "36500d".to_string()]);
    s.cp.set_extra(&args.iter().map(String::as_str).collect::<Vec<_>>());
    s.cp.start_again();
    let renewed = wait_for("the renewed certificate", ISSUANCE, || {
        served_serial(s.tls, "acme.test", &root).filter(|serial| *serial != first)
    });
    assert_eq!(acme_cert(&s.cp, "acme.test").unwrap()["serial"], renewed);
    assert!(s
        .cp
        .proc
        .log_contains("certificate installed certificate=acme:acme.test"));
    // Renewed once, not again and again: a new route makes the manager read
    // the hosts again, and it orders in name order, so by the time
    // later.test has its certificate, acme.test (still "due") was passed over.
    let mut later = Session::register(s.cp.registry, "later", "later-1");
    later.add_route("later.test", "/", &s.backend.url());
    later.apply();
    wait_for("later.test's certificate", ISSUANCE, || {
        acme_cert(&s.cp, "later.test")
    });
    assert_eq!(served_serial(s.tls, "acme.test", &root).unwrap(), renewed);
}

#[test]
fn issuance_survives_a_control_plane_killed_midway() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port, &[("PEBBLE_VA_NOSLEEP", "1")]);
    let mut s = stack(http_port, &pebble.cp_args());
    let mut session = Session::register(s.cp.registry, "shop", "shop-1");
    session.add_route("midway.test", "/", &s.backend.url());
    session.apply();
    // The challenge is served and the CA asked to look: freeze the CA so the
    // order cannot finish, and kill the control plane.
    wait_for("the challenge published", ISSUANCE, || {
        s.cp.proc
            .log_contains("challenge answer served")
            .then_some(())
    });
    pebble.proc.signal("STOP");
    s.cp.proc.kill();
    pebble.proc.signal("CONT");
    assert!(
        !s.cp.proc.log_contains("certificate installed"),
        "killed before the end"
    );
    assert!(acme_cert_absent(&s.dp));
    s.cp.start_again();
    let cert = wait_for("the certificate after the restart", ISSUANCE, || {
        acme_cert(&s.cp, "midway.test")
    });
    let root = s.dir.path().join("pebble-root.pem");
    pebble.write_root(&root);
    assert_eq!(
        served_serial(s.tls, "midway.test", &root).as_deref(),
        cert["serial"].as_str()
    );
    assert_eq!(s.dp.get("midway.test", "/").status, 200);
}

fn acme_cert_absent(dp: &DataPlane) -> bool {
    dp.config()["certificates"].as_array().unwrap().is_empty()
}

#[test]
fn an_acme_server_that_is_down_leaves_http_serving_and_says_why() {
    let http_port = free_port();
    let down = format!("https://127.0.0.1:{}/dir", free_port());
    let args = [
        "--acme-directory".to_string(),
        down,
        "--acme-email".to_string(),
        "ops@acme.test".to_string(),
    ];
    let s = stack(http_port, &args);
    let mut session = Session::register(s.cp.registry, "shop", "shop-1");
    session.add_route("down.test", "/", &s.backend.url());
    session.apply();
    assert_eq!(s.dp.get("down.test", "/").status, 200);
    let pending = wait_for("the failure reported", Duration::from_secs(20), || {
        let listed: serde_json::Value =
            serde_json::from_str(&ctl(&s.cp, &["certs", "--json"])).ok()?;
        listed["pending"]
            .as_array()?
            .iter()
            .find(|p| p["domain"] == "down.test" && p["last_error"].is_string())
            .cloned()
    });
    let error = pending["last_error"].as_str().unwrap();
    assert!(error.contains("ACME"), "{error}");
    assert!(pending["next_attempt"].is_string(), "{pending}");
    assert!(s
        .cp
        .proc
        .log_contains("certificate not obtained; will retry"));
    assert!(acme_cert_absent(&s.dp));
    assert_eq!(s.dp.get("down.test", "/").status, 200);
    let table = ctl(&s.cp, &["certs"]);
    assert!(
        table.contains("WAITING FOR ACME") && table.contains("down.test"),
        "{table}"
    );
}

#[test]
fn with_replicas_one_orders_the_certificates_and_another_takes_over_when_it_dies() {
    let etcd = Etcd::start();
    let http_port = free_port();
    let pebble = Pebble::start(http_port, &[("PEBBLE_VA_NOSLEEP", "1")]);
    let url = etcd.url();
    let mut args = vec![
        "--store",
        "etcd",
        "--etcd-endpoints",
        &url,
        "--etcd-prefix",
        "/acme",
    ];
    let acme_args = pebble.cp_args();
    args.extend(acme_args.iter().map(String::as_str));
    let mut cps: Vec<ControlPlane> = (0..2).map(|_| ControlPlane::start_with(&args)).collect();
    let all = cps
        .iter()
        .map(|c| c.grpc_url())
        .collect::<Vec<_>>()
        .join(",");
    let mut dp = DataPlane::spawn_on(
        &all,
        "acme-ha-dp",
        &format!("127.0.0.1:{http_port}"),
        &["--listen-tls", "127.0.0.1:0"],
    );
    let tls = dp.proc.listening("tls");
    dp.wait_ready();
    const HOLDER: &str = "this replica orders the certificates";
    let holder = wait_for("a replica to order", Duration::from_secs(20), || {
        cps.iter().position(|cp| cp.proc.log_contains(HOLDER))
    });
    let other = 1 - holder;

    // A session on the replica that does not order: the certificate comes
    // from the one that does, through the shared store.
    let backend = FakeBackend::start("acme-ha");
    let mut s = Session::register(cps[other].registry, "shop", "shop-1");
    s.add_route("one.acme.test", "/", &backend.url());
    s.apply();
    let first = wait_for("the first certificate", ISSUANCE, || {
        acme_cert(&cps[other], "one.acme.test")
    });
    assert_eq!(first["source"], "acme");
    assert!(cps[holder].proc.log_contains("ACME account created"));
    assert!(!cps[other].proc.log_contains(HOLDER));
    assert!(!cps[other].proc.log_contains("challenge answer served"));

    // The ordering replica dies: the other takes the role once its lease
    // runs out, and orders with the account the first one made.
    cps[holder].proc.kill();
    wait_for(
        "the other replica to order",
        Duration::from_secs(30),
        || cps[other].proc.log_contains(HOLDER).then_some(()),
    );
    s.add_route("two.acme.test", "/", &backend.url());
    s.apply();
    let second = wait_for("the second certificate", ISSUANCE, || {
        acme_cert(&cps[other], "two.acme.test")
    });
    assert!(!cps[other].proc.log_contains("ACME account created"));
    let dir = TempDir::new("portico-acme-ha");
    let root = dir.path().join("pebble-root.pem");
    pebble.write_root(&root);
    let serial = wait_for("the second certificate served", ISSUANCE, || {
        served_serial(tls, "two.acme.test", &root)
    });
    assert_eq!(second["serial"], serial);
    // The first one stays, not ordered again.
    assert_eq!(
        acme_cert(&cps[other], "one.acme.test").unwrap()["serial"],
        first["serial"]
    );
}
