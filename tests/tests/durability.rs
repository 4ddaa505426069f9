//! A durable control plane: what was acknowledged survives restarts and
//! crashes, traffic keeps flowing through them, and a broken store is
//! refused rather than silently replaced.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_e2e::process::bin;
use portico_e2e::*;
use serde_json::Value;

fn dp_version(dp: &DataPlane) -> u64 {
    let body = http_get(dp.admin, "localhost", "/ready").unwrap().body;
    serde_json::from_str::<Value>(&body).unwrap()["version"]
        .as_u64()
        .unwrap()
}

fn active_hosts(c: &mut LineClient, session: &str) -> BTreeSet<String> {
    // Compressed: how many routes the crash test applies depends on speed,
    // and a fast machine passes the plain payload's 64 KiB bound.
    let reply = c.send(&format!("ROUTE_LIST|{session}|compressed"));
    let list = gunzip_base64(reply.strip_prefix("ROUTE_LIST_OK|").expect(&reply));
    list.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "active")
        .map(|r| r["domains"][0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn traffic_flows_through_a_restart_and_sessions_reconnect() {
    let mut cp = ControlPlane::start();
    let dp = DataPlane::start(&cp.grpc_url(), "dp-1");
    let backend = FakeBackend::start("kept");
    let mut s = Session::register(cp.registry, "web", "web-1");
    let r1 = s.add_route("kept.test", "/", &backend.url());
    s.cmd("HEADERS_SET", "ALL|X-Kept|yes");
    s.apply();
    assert_eq!(s.cmd("SUBSCRIBE", "global_config_changed"), "SUBSCRIBE_OK");
    let before = dp_version(&dp);

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, served, failed, proxy) =
            (stop.clone(), served.clone(), failed.clone(), dp.proxy);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match http_get(proxy, "kept.test", "/t") {
                    Ok(r) if r.status == 200 && r.header("x-kept") == Some("yes") => {
                        served.fetch_add(1, Ordering::AcqRel)
                    }
                    _ => failed.fetch_add(1, Ordering::AcqRel),
                };
            }
        })
    };
    cp.proc.terminate();
    assert_eq!(s.client.read_line(), "SHUTDOWN");
    cp.start_again();
    wait_for("the data plane back", Duration::from_secs(15), || {
        cp.proc.log_contains("data plane connected").then_some(())
    });
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", s.id)), "OK");
    let list = json_after(&c.send(&format!("ROUTE_LIST|{}", s.id)), "ROUTE_LIST_OK");
    assert_eq!(list[0]["route_id"], r1.as_str());
    assert_eq!(list[0]["status"], "active");
    let added = c.send(&format!(
        "ROUTE_ADD|{}|more.test|/|{}|0",
        s.id,
        backend.url()
    ));
    let r2: u64 = added.strip_prefix("ROUTE_OK|r").unwrap().parse().unwrap();
    assert!(
        r2 > r1[1..].parse::<u64>().unwrap(),
        "route ids continue: {added}"
    );
    // The subscription came back with the session: it hears of its own
    // commit before the reply.
    let event = c.send(&format!("CONFIG_APPLY|{}", s.id));
    assert!(event.starts_with("EVENT|global_config_changed|"), "{event}");
    assert_eq!(c.read_line(), "OK");
    assert!(
        dp_version(&dp) > before,
        "a new apply gets a higher version"
    );
    assert_eq!(dp.get("more.test", "/").status, 200);
    stop.store(true, Ordering::Release);
    traffic.join().unwrap();
    assert!(served.load(Ordering::Acquire) > 10);
    assert_eq!(
        failed.load(Ordering::Acquire),
        0,
        "no request failed through the restart"
    );
}

/// Applies pairs of routes in a loop from several sessions and kills the
/// control plane (SIGKILL) at random moments: every apply that answered OK
/// is there after the restart, and the one in flight is wholly there or not.
#[test]
fn acknowledged_applies_survive_sigkill() {
    let mut cp = ControlPlane::start();
    let sessions: Vec<String> = (0..3)
        .map(|i| LineClient::connect(cp.registry).register("crash", &format!("crash-{i}")))
        .collect();
    let mut seed = Instant::now().elapsed().subsec_nanos() as u64 | 1;
    let mut acked: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); 3];
    let mut counter = 0u64;
    for round in 0..5 {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(w, id)| {
                let (stop, id, registry) = (stop.clone(), id.clone(), cp.registry);
                let first = counter + (w as u64) * 100_000;
                std::thread::spawn(move || {
                    let mut done = Vec::new();
                    let mut in_flight = None;
                    let Ok(stream) = std::net::TcpStream::connect(registry) else {
                        return (done, in_flight);
                    };
                    drop(stream);
                    let mut c = LineClient::connect(registry);
                    let mut n = first;
                    while !stop.load(Ordering::Acquire) {
                        n += 1;
                        in_flight = Some(n);
                        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            for side in ["a", "b"] {
                                let r = c.send(&format!(
                                    "ROUTE_ADD|{id}|h{n}{side}.crash|/|http://127.0.0.1:9|0"
                                ));
                                if !r.starts_with("ROUTE_OK|") {
                                    return false;
                                }
                            }
                            c.send(&format!("CONFIG_APPLY|{id}")) == "OK"
                        }));
                        match ok {
                            Ok(true) => {
                                done.push(n);
                                in_flight = None;
                            }
                            _ => break,
                        }
                    }
                    (done, in_flight)
                })
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 450));
        cp.proc.kill();
        stop.store(true, Ordering::Release);
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect();
        counter += 1_000;
        cp.start_again();
        let mut c = LineClient::connect(cp.registry);
        for (w, (done, in_flight)) in results.into_iter().enumerate() {
            acked[w].extend(done);
            let id = &sessions[w];
            assert_eq!(c.send(&format!("RECONNECT|{id}")), "OK", "round {round}");
            let hosts = active_hosts(&mut c, id);
            for n in &acked[w] {
                assert!(
                    hosts.contains(&format!("h{n}a.crash"))
                        && hosts.contains(&format!("h{n}b.crash")),
                    "round {round}: acknowledged apply {n} lost"
                );
            }
            if let Some(n) = in_flight {
                let (a, b) = (
                    hosts.contains(&format!("h{n}a.crash")),
                    hosts.contains(&format!("h{n}b.crash")),
                );
                assert_eq!(a, b, "round {round}: apply {n} half present");
                if a {
                    acked[w].insert(n);
                }
            }
            assert_eq!(
                hosts.len(),
                acked[w].len() * 2,
                "round {round}: nothing else is active"
            );
        }
    }
    assert!(
        acked.iter().map(BTreeSet::len).sum::<usize>() > 5,
        "the workers applied something: {acked:?}"
    );
}

#[test]
fn a_corrupt_store_stops_the_start_and_names_the_file() {
    let data_dir = portico_e2e::process::tempdir::TempDir::new("portico-corrupt");
    let file = data_dir.path().join("state.redb");
    std::fs::write(&file, vec![0x5au8; 8192]).unwrap();
    let mut proc = ControlPlane::spawn_only(&data_dir, &[]);
    let status = wait_for(
        "the control plane to refuse",
        Duration::from_secs(10),
        || proc.exited(),
    );
    assert!(!status.success());
    assert!(
        proc.log_contains(&file.display().to_string()),
        "the error names the file:\n{}",
        proc.log_text()
    );
    assert!(!proc.log_contains("portico-cp ready"));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        vec![0x5au8; 8192],
        "the file is left as it was"
    );
    // --reset-state is the explicit way out.
    let proc = ControlPlane::spawn_only(&data_dir, &["--reset-state"]);
    wait_for("a fresh start", Duration::from_secs(10), || {
        proc.log_contains("portico-cp ready").then_some(())
    });
}

#[test]
fn export_wipe_import_brings_everything_back() {
    let mut cp = ControlPlane::start();
    let mut a = Session::register(cp.registry, "alpha", "alpha-1");
    let mut b = Session::register(cp.registry, "beta", "beta-1");
    a.add_route("a.test", "/", "http://127.0.0.1:9");
    a.cmd("OPTIONS_SET", "ALL|retries|2");
    a.cmd("RATELIMIT_SET", "ALL|10|1m");
    a.apply();
    let rb = b.add_route("b.test", "/api", "https://127.0.0.1:9443");
    b.cmd("HEALTH_SET", &format!("{rb}|/h|5s|1s"));
    b.apply();
    let before: Vec<(Value, Value)> = [&mut a, &mut b]
        .into_iter()
        .map(|s| {
            (
                s.json("ROUTE_LIST", "", "ROUTE_LIST_OK"),
                s.json("CONFIG_DIFF", "", "DIFF_OK"),
            )
        })
        .collect();
    let info_before = a.json("SESSION_INFO", "", "SESSION_OK");
    cp.proc.terminate();
    let dir = cp.data_dir.path().display().to_string();
    let export = cp.export();
    let exported: Value = serde_json::from_str(&export).unwrap();
    assert_eq!(exported["sessions"].as_array().unwrap().len(), 2);
    // A backup holds the sessions' keys, never their ids.
    let text = &export;
    for s in [&a, &b] {
        assert!(!text.contains(secret_part(&s.id)), "{text}");
    }

    std::fs::remove_file(cp.data_dir.path().join("state.redb")).unwrap();
    let mut import = Command::new(bin("portico-cp"))
        .args(["--data-dir", &dir, "import"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    import
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = import.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    cp.start_again();
    let mut after = Vec::new();
    for s in [&a, &b] {
        let mut c = LineClient::connect(cp.registry);
        assert_eq!(c.send(&format!("RECONNECT|{}", s.id)), "OK");
        after.push((
            json_after(&c.send(&format!("ROUTE_LIST|{}", s.id)), "ROUTE_LIST_OK"),
            json_after(&c.send(&format!("CONFIG_DIFF|{}", s.id)), "DIFF_OK"),
        ));
    }
    assert_eq!(before, after);
    let mut c = LineClient::connect(cp.registry);
    let info_after = json_after(&c.send(&format!("SESSION_INFO|{}", a.id)), "SESSION_OK");
    for key in [
        "session_id",
        "service_name",
        "instance_name",
        "connected_at",
        "routes_active",
        "metadata",
        "last_apply",
    ] {
        assert_eq!(info_before[key], info_after[key], "{key}");
    }
}
