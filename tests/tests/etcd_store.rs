//! The control plane's state in a real etcd (`--store etcd`): what was
//! acknowledged survives a crash, replicas on one prefix share one order of
//! commits and each pushes every version, and an etcd outage fails applies
//! clearly, without stopping anything.

use std::time::Duration;

use portico_e2e::etcd::Etcd;
use portico_e2e::*;

fn etcd_args<'a>(etcd: &'a str, prefix: &'a str) -> [&'a str; 6] {
    [
        "--store",
        "etcd",
        "--etcd-endpoints",
        etcd,
        "--etcd-prefix",
        prefix,
    ]
}

#[test]
fn the_state_lives_in_etcd_and_survives_a_crash() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut cp = ControlPlane::start_with(&etcd_args(&url, "/crash"));
    let dp = DataPlane::start(&cp.grpc_url(), "etcd-dp");
    let backend = FakeBackend::start("etcd-kept");
    let mut s = Session::register(cp.registry, "web", "web-1");
    s.add_route("kept.test", "/", &backend.url());
    s.apply();
    assert_eq!(dp.get("kept.test", "/").status, 200);

    cp.proc.kill();
    cp.start_again();
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", s.id)), "OK");
    let list = json_after(&c.send(&format!("ROUTE_LIST|{}", s.id)), "ROUTE_LIST_OK");
    assert_eq!(list[0]["domains"][0], "kept.test", "{list}");
    assert_eq!(list[0]["status"], "active");
    // Versions and route ids go on from what etcd holds (ids above the
    // block reserved before the crash: none is ever reused).
    let reply = c.send(&format!(
        "ROUTE_ADD|{}|more.test|/|{}|0",
        s.id,
        backend.url()
    ));
    let id: u64 = reply
        .strip_prefix("ROUTE_OK|r")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(id > 1, "{reply}");
    assert_eq!(c.send(&format!("CONFIG_APPLY|{}", s.id)), "OK");
    assert_eq!(dp.get("more.test", "/").status, 200);
    assert_eq!(dp.get("kept.test", "/").status, 200);
    let planes = dataplanes(&cp);
    assert_eq!(planes[0]["acked_version"], 2, "{planes:?}");
}

/// A bound on waiting for acknowledgements that a loaded test machine
/// cannot reach, so `OK` is never an apply timeout's.
const APPLY_TIMEOUT: [&str; 2] = ["--apply-timeout", "20s"];

/// Starts `n` replicas on one prefix.
fn replicas(etcd: &str, prefix: &str, n: usize) -> Vec<ControlPlane> {
    let mut args = etcd_args(etcd, prefix).to_vec();
    args.extend(APPLY_TIMEOUT);
    (0..n).map(|_| ControlPlane::start_with(&args)).collect()
}

/// The version `porticoctl snapshot` shows on `cp`.
fn version_on(cp: &ControlPlane) -> u64 {
    let snapshot: serde_json::Value =
        serde_json::from_str(&ctl(cp, &["snapshot", "--json"])).unwrap();
    snapshot["version"].as_u64().unwrap()
}

#[test]
fn replicas_share_one_order_of_commits_and_ok_means_served_fleet_wide() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut cps = replicas(&url, "/ha", 3);
    let dp_a = DataPlane::start(&cps[0].grpc_url(), "ha-dp-a");
    let dp_b = DataPlane::start(&cps[2].grpc_url(), "ha-dp-b");
    let backend = FakeBackend::start("ha");
    for cp in &cps {
        wait_fleet(cp, &["ha-dp-a", "ha-dp-b"]);
    }
    // Replica 1 holds no data plane, and shows both, each on its replica.
    let planes = dataplanes(&cps[1]);
    assert_eq!(planes.len(), 2, "{planes:?}");
    let replicas: Vec<serde_json::Value> =
        serde_json::from_str(&ctl(&cps[1], &["replicas", "--json"])).unwrap();
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    assert_eq!(replicas.iter().filter(|r| r["self"] == true).count(), 1);
    for plane in &planes {
        assert!(
            replicas.iter().any(|r| r["id"] == plane["replica"]),
            "{plane}"
        );
    }

    // Six sessions, two per replica, each applying five times at once; after
    // every OK both data planes serve the route, whichever replica answered.
    const APPLIES: usize = 5;
    let proxies = [dp_a.proxy, dp_b.proxy];
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let (registry, backend) = (cps[i % 3].registry, backend.url());
            std::thread::spawn(move || {
                let mut s = Session::register(registry, &format!("svc{i}"), "one");
                (0..APPLIES)
                    .map(|j| {
                        let host = format!("h{i}-{j}.test");
                        let id = s.add_route(&host, "/", &backend);
                        s.apply();
                        for proxy in proxies {
                            let status = http_get(proxy, &host, "/").unwrap().status;
                            assert_eq!(status, 200, "{host} right after OK");
                        }
                        id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a session's applies"))
        .collect();
    let applies = ids.len() as u64;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, applies, "route ids are never reused");

    // One version per apply, none reused: every replica ends at the same one.
    for cp in &cps {
        wait_for("the replica to follow", Duration::from_secs(10), || {
            (version_on(cp) == applies).then_some(())
        });
    }
    for dp in [&dp_a, &dp_b] {
        assert_eq!(dp.config()["version"], applies);
    }

    // Ownership holds across replicas: svc0 (on replica 0) owns h0-0.test/.
    let mut intruder = Session::register(cps[1].registry, "intruder", "x");
    intruder.add_route("h0-0.test", "/", &backend.url());
    let reply = intruder.cmd("CONFIG_APPLY", "");
    assert!(
        reply.starts_with("ERROR|") && reply.contains("owned by service svc0"),
        "{reply}"
    );
    assert_eq!(dp_b.get("h0-0.test", "/").status, 200);

    // A replica that stops leaves the list at once; its data plane moves on.
    cps[2].proc.terminate();
    wait_for(
        "the stopped replica to leave",
        Duration::from_secs(10),
        || {
            let replicas: Vec<serde_json::Value> =
                serde_json::from_str(&ctl(&cps[0], &["replicas", "--json"])).unwrap();
            (replicas.len() == 2).then_some(())
        },
    );
}

#[test]
fn applies_answer_store_unavailable_while_etcd_is_down_and_work_again_after() {
    let mut etcd = Etcd::start();
    let url = etcd.url();
    let cps = replicas(&url, "/outage", 2);
    let dp = DataPlane::start(&cps[1].grpc_url(), "outage-dp");
    let backend = FakeBackend::start("outage");
    let mut s = Session::register(cps[0].registry, "web", "web-1");
    s.add_route("steady.test", "/", &backend.url());
    s.apply();
    wait_for(
        "the route on the other replica's data plane",
        Duration::from_secs(10),
        || (dp.get("steady.test", "/").status == 200).then_some(()),
    );

    etcd.stop();
    s.add_route("during.test", "/", &backend.url());
    assert_eq!(s.cmd("CONFIG_APPLY", ""), "ERROR|store unavailable");
    // A subscription is kept with the session, so it cannot be made either.
    assert_eq!(s.cmd("SUBSCRIBE", "all"), "ERROR|store unavailable");
    // Traffic goes on, for the whole outage.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut served = 0;
    while std::time::Instant::now() < until {
        assert_eq!(dp.get("steady.test", "/").status, 200);
        served += 1;
    }
    assert!(served > 0);
    assert_eq!(s.cmd("CONFIG_APPLY", ""), "ERROR|store unavailable");
    assert_eq!(dp.get("during.test", "/").status, 404);

    etcd.start_again();
    // The same staged change goes through once etcd is back, without a
    // restart, and the other replica follows it again.
    wait_for("an apply to succeed", Duration::from_secs(20), || {
        (s.cmd("CONFIG_APPLY", "") == "OK").then_some(())
    });
    wait_for(
        "the data plane to serve it",
        Duration::from_secs(10),
        || (dp.get("during.test", "/").status == 200).then_some(()),
    );
    assert_eq!(dp.get("steady.test", "/").status, 200);
}

/// Requests `hosts` through `proxies` until stopped; counts failures (an
/// answer without the `X-Kept: yes` its session set is one).
struct Steady {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Steady {
    fn start(proxies: Vec<std::net::SocketAddr>, hosts: Vec<String>) -> Steady {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut served, mut failed) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for proxy in &proxies {
                    for host in &hosts {
                        match http_get(*proxy, host, "/") {
                            Ok(r) if r.status == 200 && r.header("x-kept") == Some("yes") => {
                                served += 1
                            }
                            Ok(r) => failed.push(format!("{host} via {proxy}: {}", r.status)),
                            Err(e) => failed.push(format!("{host} via {proxy}: {e}")),
                        }
                    }
                }
            }
            (served, failed)
        });
        Steady { stop, thread }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the steady requests")
    }
}

#[test]
fn a_session_survives_its_replica_and_a_detached_ones_grace_still_fires() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut args = etcd_args(&url, "/failover").to_vec();
    args.extend(["--session-grace", "3s"]);
    args.extend(APPLY_TIMEOUT);
    let mut cps: Vec<ControlPlane> = (0..3).map(|_| ControlPlane::start_with(&args)).collect();
    let all = cps
        .iter()
        .map(|c| c.grpc_url())
        .collect::<Vec<_>>()
        .join(",");
    let dp_a = DataPlane::start(&all, "fo-dp-a");
    let dp_b = DataPlane::start(&cps[2].grpc_url(), "fo-dp-b");
    for cp in &cps {
        wait_fleet(cp, &["fo-dp-a", "fo-dp-b"]);
    }
    let backend = FakeBackend::start("failover");
    let mut s = Session::register(cps[0].registry, "web", "web-1");
    s.add_route("kept.test", "/", &backend.url());
    assert_eq!(s.cmd("HEADERS_SET", "ALL|X-Kept|yes"), "HEADERS_OK");
    s.apply();
    let mut orphan = Session::register(cps[0].registry, "batch", "b-1");
    orphan.add_route("orphan.test", "/", &backend.url());
    orphan.apply();
    assert_eq!(s.cmd("SUBSCRIBE", "global_config_changed"), "SUBSCRIBE_OK");
    let steady = Steady::start(vec![dp_a.proxy, dp_b.proxy], vec!["kept.test".into()]);

    // The replica holding both sessions (and data plane a's stream) dies.
    cps[0].proc.kill();
    let mut c = LineClient::connect(cps[1].registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", s.id)), "OK");
    let list = json_after(&c.send(&format!("ROUTE_LIST|{}", s.id)), "ROUTE_LIST_OK");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["domains"][0], "kept.test", "{list}");
    assert_eq!(list[0]["status"], "active");
    let reply = c.send(&format!(
        "ROUTE_ADD|{}|after.test|/|{}|0",
        s.id,
        backend.url()
    ));
    assert!(reply.starts_with("ROUTE_OK|"), "{reply}");
    // The subscription came along: the session hears of its own commit
    // before the reply.
    let event = c.send(&format!("CONFIG_APPLY|{}", s.id));
    assert!(event.starts_with("EVENT|global_config_changed|"), "{event}");
    assert_eq!(c.read_line(), "OK");
    // Served right after OK, on both planes (a moved to another replica),
    // with the session's settings.
    for dp in [&dp_a, &dp_b] {
        let after = dp.get("after.test", "/");
        assert_eq!(after.status, 200);
        assert_eq!(after.header("x-kept"), Some("yes"));
    }

    // The session nobody reconnects: a live replica takes it over once the
    // dead one's lease runs out, and its grace ends there.
    wait_for("the orphan's routes to go", Duration::from_secs(30), || {
        (dp_a.get("orphan.test", "/").status == 404 && dp_b.get("orphan.test", "/").status == 404)
            .then_some(())
    });
    let replicas: Vec<serde_json::Value> =
        serde_json::from_str(&ctl(&cps[1], &["replicas", "--json"])).unwrap();
    assert_eq!(replicas.len(), 2, "{replicas:?}");

    let (served, failed) = steady.finish();
    assert!(served > 0);
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        served,
        &failed[..failed.len().min(5)]
    );
    assert_eq!(dp_a.get("kept.test", "/").status, 200);
}

#[test]
fn stats_breakers_health_events_and_backend_tests_work_for_a_session_on_a_replica_without_data_planes(
) {
    let etcd = Etcd::start();
    let url = etcd.url();
    let cps = replicas(&url, "/ops", 2);
    let dp = DataPlane::start(&cps[0].grpc_url(), "ops-dp");
    wait_fleet(&cps[1], &["ops-dp"]);
    // Both sessions run on replica 1; the only data plane is on replica 0.
    let (hb, cb) = (FakeBackend::start("hb"), FakeBackend::start("cb"));
    let mut health = Session::register(cps[1].registry, "probed", "p-1");
    let rh = health.add_route("probed.test", "/", &hb.url());
    assert_eq!(
        health.cmd("HEALTH_SET", &format!("{rh}|/probe|1s|500ms")),
        "HEALTH_OK"
    );
    health.apply();
    assert_eq!(
        health.cmd("SUBSCRIBE", "backend_health_changed"),
        "SUBSCRIBE_OK"
    );
    let mut s = Session::register(cps[1].registry, "broken", "b-1");
    let r = s.add_route("cb.test", "/", &cb.url());
    assert_eq!(
        s.cmd("CIRCUIT_BREAKER_SET", &format!("{r}|2|30s|1")),
        "CIRCUIT_OK"
    );
    s.apply();

    for _ in 0..5 {
        assert_eq!(dp.get("cb.test", "/").status, 200);
    }
    let stats = wait_for("the stats on replica 1", Duration::from_secs(10), || {
        let st = s.json("STATS_GET", &r, "STATS_OK");
        (st["requests"] == 5).then_some(st)
    });
    assert_eq!(stats["status_codes"]["200"], 5);

    // The breaker opens on the data plane; replica 1 sees it, and its
    // RESET reaches the data plane through replica 0.
    cb.set_status(500);
    for _ in 0..2 {
        assert_eq!(dp.get("cb.test", "/").status, 500);
    }
    assert_eq!(dp.get("cb.test", "/").status, 503);
    let status = wait_for(
        "the open breaker on replica 1",
        Duration::from_secs(10),
        || {
            let st = s.json("CIRCUIT_BREAKER_STATUS", &r, "CIRCUIT_STATUS_OK");
            (st["state"] == "open").then_some(st)
        },
    );
    assert_eq!(status["data_planes"][0]["node_id"], "ops-dp");
    cb.set_status(200);
    assert_eq!(s.cmd("CIRCUIT_BREAKER_RESET", &r), "CIRCUIT_OK");
    assert_eq!(
        dp.get("cb.test", "/").status,
        200,
        "closed on the data plane"
    );
    assert_eq!(
        s.json("CIRCUIT_BREAKER_STATUS", &r, "CIRCUIT_STATUS_OK")["state"],
        "closed"
    );

    // The probe fails on the data plane; the session on replica 1 hears it.
    hb.set_status(503);
    let event = health.client.read_line();
    let payload = json_after(
        event.strip_prefix("EVENT|").unwrap_or(&event),
        "backend_health_changed",
    );
    assert_eq!(payload["route_id"], rh.as_str());
    assert_eq!(payload["healthy"], false);
    assert_eq!(payload["reason"], "status 503");

    // BACKEND_TEST runs on the data plane of the other replica.
    assert!(!dp.proc.log_contains("backend test"));
    let reply = s.cmd("BACKEND_TEST", &cb.url());
    assert!(reply.starts_with("BACKEND_OK|"), "{reply}");
    assert!(
        dp.proc.log_contains("backend test"),
        "run where traffic flows"
    );
}

#[test]
fn etcd_over_tls_takes_the_replica_with_its_client_certificate_and_refuses_it_without() {
    let etcd = Etcd::start_tls();
    let pki = etcd.tls().expect("a TLS etcd");
    let url = etcd.url();
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let mut args = etcd_args(&url, "/tls").to_vec();
    args.extend([
        "--etcd-tls-ca",
        &ca,
        "--etcd-tls-cert",
        &cert,
        "--etcd-tls-key",
        &key,
    ]);
    let cp = ControlPlane::start_with(&args);
    let dp = DataPlane::start(&cp.grpc_url(), "tls-etcd-dp");
    let backend = FakeBackend::start("tls-etcd");
    let mut s = Session::register(cp.registry, "web", "web-1");
    s.add_route("over-tls.test", "/", &backend.url());
    s.apply();
    assert_eq!(dp.get("over-tls.test", "/").status, 200);
    assert_eq!(version_on(&cp), 1);

    // Without a client certificate etcd refuses the handshake: the replica
    // does not start, and says why.
    let dir = portico_e2e::process::tempdir::TempDir::new("portico-cp-no-cert");
    let mut refused = etcd_args(&url, "/tls").to_vec();
    refused.extend(["--etcd-tls-ca", &ca]);
    let mut proc = ControlPlane::spawn_only(&dir, &refused);
    let status = proc.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        proc.log_contains("the etcd state store at"),
        "{}",
        proc.log_text()
    );
}

#[test]
fn a_replica_restarted_under_its_id_runs_its_own_sessions_again() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut args = etcd_args(&url, "/stable").to_vec();
    args.extend(["--replica-id", "cp-0", "--restore-grace", "2s"]);
    args.extend(APPLY_TIMEOUT);
    let mut cp = ControlPlane::start_with(&args);
    let dp = DataPlane::start(&cp.grpc_url(), "stable-dp");
    let backend = FakeBackend::start("stable");
    let mut kept = Session::register(cp.registry, "kept", "k-1");
    kept.add_route("kept-stable.test", "/", &backend.url());
    kept.apply();
    let mut left = Session::register(cp.registry, "left", "l-1");
    left.add_route("left-stable.test", "/", &backend.url());
    left.apply();

    // Restarted as a pod is, under the same id, while its lease still runs.
    cp.proc.kill();
    cp.start_again();
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", kept.id)), "OK");
    // The session nobody reconnects is this replica's again: its restore
    // grace ends here.
    wait_for(
        "the unclaimed session's routes to go",
        Duration::from_secs(20),
        || (dp.get("left-stable.test", "/").status == 404).then_some(()),
    );
    assert_eq!(dp.get("kept-stable.test", "/").status, 200);
}

#[test]
fn a_register_on_another_replica_takes_over_its_instances_session() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut cps = replicas(&url, "/reregister", 2);
    let dp = DataPlane::start(&cps[1].grpc_url(), "rereg-dp");
    wait_fleet(&cps[0], &["rereg-dp"]);
    let backend = FakeBackend::start("rereg");
    let mut old = Session::register(cps[0].registry, "web", "web-1");
    let route = old.add_route("inherited.test", "/", &backend.url());
    old.apply();

    // Its replica dies; the instance registers again, on the other one.
    cps[0].proc.kill();
    let mut new = Session::register(cps[1].registry, "web", "web-1");
    assert_ne!(new.id, old.id);
    let list = new.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(list[0]["route_id"], route.as_str(), "{list}");
    assert_eq!(list[0]["status"], "active");
    assert_eq!(dp.get("inherited.test", "/").status, 200);
    let mut c = LineClient::connect(cps[1].registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", old.id)), "REREGISTER");
    // The new session owns the route: it goes when the session says so.
    assert_eq!(new.cmd("ROUTE_REMOVE", &route), "ROUTE_OK");
    new.apply();
    assert_eq!(dp.get("inherited.test", "/").status, 404);
}

#[test]
fn a_store_kept_by_session_id_is_kept_by_key_after_a_start_and_reconnect_works() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut cp = ControlPlane::start_with(&etcd_args(&url, "/keyed"));
    let dp = DataPlane::start(&cp.grpc_url(), "keyed-dp");
    let backend = FakeBackend::start("keyed");
    let mut s = Session::register(cp.registry, "web", "web-1");
    s.add_route("keyed.test", "/", &backend.url());
    s.apply();
    let secret = secret_part(&s.id).to_string();
    let sessions = etcd.dump("/keyed/sessions/");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (key, value) = sessions[0].clone();
    assert!(
        !key.contains(&secret) && !value.contains(&secret),
        "{key} {value}"
    );

    // Written back as a control plane before keys kept it: under its id.
    cp.proc.kill();
    let mut old: serde_json::Value = serde_json::from_str(&value).unwrap();
    old["id"] = serde_json::json!(s.id);
    etcd.delete(&key);
    etcd.put(&format!("/keyed/sessions/{}", s.id), &old.to_string());
    cp.start_again();
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", s.id)), "OK");
    let list = json_after(&c.send(&format!("ROUTE_LIST|{}", s.id)), "ROUTE_LIST_OK");
    assert_eq!(list[0]["domains"][0], "keyed.test", "{list}");
    assert_eq!(dp.get("keyed.test", "/").status, 200);
    let after = etcd.dump("/keyed/");
    assert!(
        after
            .iter()
            .all(|(k, v)| !k.contains(&secret) && !v.contains(&secret)),
        "{after:?}"
    );
    assert_eq!(etcd.dump("/keyed/sessions/").len(), 1);
}
