//! Session ids are credentials (docs/SECURITY.md): after a full flow with
//! every process logging at debug, the secret part of the id is found on no
//! surface an operator, a log shipper or a backup can read. (Its own test
//! binary: it sets the log level for the processes it starts.)

use std::path::Path;
use std::time::Duration;

use portico_e2e::process::tempdir::TempDir;
use portico_e2e::*;

/// Every file under `dir`, read as bytes, with the ones holding `secret`.
fn files_holding(dir: &Path, secret: &str) -> (usize, Vec<String>) {
    let mut read = 0;
    let mut holding = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            read += 1;
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                holding.push(path.display().to_string());
            }
        }
    }
    (read, holding)
}

#[test]
fn no_view_push_log_or_backup_shows_a_session_id() {
    std::env::set_var("PORTICO_TEST_LOG", "debug");
    let files = TempDir::new("portico-secrets");
    let cache = files.path().join("snapshot.pb").display().to_string();
    let access = files.path().join("access.log").display().to_string();
    let mut cp = ControlPlane::start_with(&["--max-invalid-sessions-per-ip", "60"]);
    let dp = DataPlane::spawn(
        &cp.grpc_url(),
        "secrets-dp",
        &["--snapshot-cache", &cache, "--access-log", &access],
    );
    dp.wait_ready();
    let backend = FakeBackend::start("secrets");

    // The flow: every command that carries the id, and the events.
    let mut s = Session::register(cp.registry, "shop", "shop-1");
    let secret = secret_part(&s.id).to_string();
    assert_eq!(secret.len(), 32, "{}", s.id);
    let r1 = s.add_route("shop.test", "/", &backend.url());
    assert_eq!(s.cmd("HEALTH_SET", &format!("{r1}|/|2s|1s")), "HEALTH_OK");
    assert_eq!(s.cmd("SUBSCRIBE", "drain_completed"), "SUBSCRIBE_OK");
    s.apply();
    for _ in 0..5 {
        assert_eq!(dp.get("shop.test", "/").status, 200);
    }
    wait_for("the requests in the stats", Duration::from_secs(20), || {
        let stats = s.json("STATS_GET", &r1, "STATS_OK");
        (stats["requests"].as_u64() >= Some(5)).then_some(())
    });
    assert!(s.cmd("DRAIN_START", "1h").starts_with("DRAIN_OK|"));
    assert!(s.cmd("DRAIN_STATUS", "").starts_with("DRAIN_STATUS_OK|"));
    assert_eq!(s.cmd("DRAIN_CANCEL", ""), "DRAIN_OK");
    assert_eq!(s.cmd("MAINT_ENTER", &r1), "ACK");
    assert!(s.client.read_line().starts_with("MAINT_OK|"));
    assert_eq!(s.cmd("MAINT_EXIT", &r1), "ACK");
    assert!(s.client.read_line().starts_with("MAINT_OK|"));
    // An invalid id is answered like any other, and counted.
    assert_eq!(
        one_shot(cp.registry, "PING|shop-1-00000000000000000000000000000000"),
        "ERROR|invalid session"
    );
    cp.proc.terminate();
    cp.start_again();
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", s.id)), "OK");
    let list = json_after(&c.send(&format!("ROUTE_LIST|{}", s.id)), "ROUTE_LIST_OK");
    assert_eq!(list[0]["domains"][0], "shop.test");
    assert_eq!(dp.get("shop.test", "/").status, 200);

    let mut surfaces: Vec<(String, String)> = Vec::new();
    for path in [
        "/",
        "/healthz",
        "/ready",
        "/metrics",
        "/debug/counts",
        "/api/v1/sessions",
        "/api/v1/routes",
        "/api/v1/dataplanes",
        "/api/v1/events",
    ] {
        let reply = http_get(cp.admin, "localhost", path).unwrap();
        assert_eq!(reply.status, 200, "{path}");
        surfaces.push((format!("control plane {path}"), reply.body));
    }
    let metrics = &surfaces
        .iter()
        .find(|(n, _)| n.ends_with("/metrics"))
        .unwrap()
        .1;
    assert!(
        metrics.contains("portico_invalid_sessions_total{result=\"answered\"}"),
        "{metrics}"
    );
    for path in ["/healthz", "/ready", "/metrics", "/config", "/debug/counts"] {
        let reply = http_get(dp.admin, "localhost", path).unwrap();
        assert_eq!(reply.status, 200, "{path}");
        surfaces.push((format!("data plane {path}"), reply.body));
    }
    let config = &surfaces
        .iter()
        .find(|(n, _)| n.ends_with("/config"))
        .unwrap()
        .1;
    assert!(config.contains(&handle("shop-1", &s.id)), "{config}");
    for sub in ["dataplanes", "replicas", "routes", "snapshot", "certs"] {
        surfaces.push((format!("porticoctl {sub}"), ctl(&cp, &[sub])));
        surfaces.push((
            format!("porticoctl {sub} --json"),
            ctl(&cp, &[sub, "--json"]),
        ));
    }
    surfaces.push(("the control plane's log".into(), cp.proc.log_text()));
    surfaces.push(("the data plane's log".into(), dp.proc.log_text()));
    assert!(
        cp.proc.log_contains("DEBUG"),
        "the control plane logged at debug"
    );
    assert!(
        cp.proc.log_contains(&handle("shop-1", &s.id)),
        "the log names the session by its handle"
    );
    let found: Vec<&str> = surfaces
        .iter()
        .filter(|(_, text)| text.contains(&secret))
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(found.is_empty(), "the session id is shown by {found:?}");

    // Guessing ids from one address: after 60 unknown ids in 10 s (the flag), its session
    // commands are refused for the rest of the window, and both are counted.
    let mut guesser = LineClient::connect(cp.registry);
    let refusal = "ERROR|too many invalid session ids from this address; try again later";
    let answers: Vec<String> = (0..70)
        .map(|n| guesser.send(&format!("PING|shop-1-{n:032x}")))
        .collect();
    assert!(
        answers[..60].iter().all(|a| a == "ERROR|invalid session"),
        "{answers:?}"
    );
    assert!(answers[60..].iter().all(|a| a == refusal), "{answers:?}");
    assert_eq!(
        c.send(&format!("PING|{}", s.id)),
        refusal,
        "the address is refused"
    );
    let metrics = http_get(cp.admin, "localhost", "/metrics").unwrap().body;
    assert!(
        metrics.contains("portico_invalid_sessions_total{result=\"refused\"}"),
        "{metrics}"
    );
    assert!(cp
        .proc
        .log_contains("too many invalid session ids from this address"));

    // A backup, then the files: the store, the snapshot cache, the access log.
    cp.proc.terminate();
    let backup = cp.export();
    assert!(backup.contains("shop.test"), "{backup}");
    assert!(
        !backup.contains(&secret),
        "the export holds the id: {backup}"
    );
    let (read, holding) = files_holding(cp.data_dir.path(), &secret);
    assert!(read > 0, "the store's files");
    assert!(holding.is_empty(), "{holding:?}");
    wait_for("the access log written", Duration::from_secs(10), || {
        std::fs::metadata(&access).ok().filter(|m| m.len() > 0)
    });
    let (read, holding) = files_holding(files.path(), &secret);
    assert!(read >= 2, "the snapshot cache and the access log");
    assert!(holding.is_empty(), "{holding:?}");
}
