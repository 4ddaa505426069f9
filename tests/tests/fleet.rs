//! A fleet of data planes and the operator's view of it: every plane
//! acknowledges every version, a refused push is NACKed and shown, and
//! porticoctl follows pushes and answers through the operator API only.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use portico_e2e::process::bin;
use portico_e2e::*;
use serde_json::Value;

fn ctl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = Command::new(bin("porticoctl"))
        .args(["--control-plane", &cp.grpc_url()])
        .args(args)
        .output()
        .expect("running porticoctl");
    assert!(
        out.status.success(),
        "porticoctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dataplanes(cp: &ControlPlane) -> Vec<Value> {
    serde_json::from_str::<Value>(&ctl(cp, &["dataplanes", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn four_data_planes_acknowledge_every_version() {
    let cp = ControlPlane::start();
    let dps: Vec<DataPlane> = (0..4)
        .map(|i| DataPlane::start(&cp.grpc_url(), &format!("dp-{i}")))
        .collect();
    let backend = FakeBackend::start("fleet");
    let mut s = Session::register(cp.registry, "fleet", "fleet-1");
    for round in 0..5 {
        s.add_route(&format!("r{round}.fleet.test"), "/", &backend.url());
        s.apply();
        for dp in &dps {
            assert_eq!(dp.get(&format!("r{round}.fleet.test"), "/").status, 200);
        }
    }
    let planes = dataplanes(&cp);
    assert_eq!(planes.len(), 4);
    for p in &planes {
        assert_eq!(p["acked_version"], 5, "{p}");
        assert_eq!(p["lag"], 0);
        assert!(p["last_nack"].is_null());
        assert!(p["connected_since"].as_str().unwrap().ends_with('Z'));
        assert!(p["node_id"].as_str().unwrap().starts_with("dp-"));
    }
    let table = ctl(&cp, &["dataplanes"]);
    assert!(table.starts_with("version 5\nNODE ID"), "{table}");
    assert_eq!(table.lines().count(), 6);
    let routes: Value = serde_json::from_str(&ctl(&cp, &["routes", "--json"])).unwrap();
    assert_eq!(routes.as_array().unwrap().len(), 5);
    assert_eq!(routes[0]["route_id"], "r1");
    assert_eq!(routes[0]["service"], "fleet");
    let snapshot: Value = serde_json::from_str(&ctl(&cp, &["snapshot", "--json"])).unwrap();
    assert_eq!(snapshot["version"], 5);
    assert!(snapshot["routes"][0]["settings"]["options"].is_object());
    assert!(ctl(&cp, &["routes"]).contains("r4.fleet.test"));
}

#[test]
fn a_refused_push_is_nacked_shown_and_changes_nothing_there() {
    let cp = ControlPlane::start();
    let small = DataPlane::spawn(&cp.grpc_url(), "dp-small", &["--max-routes", "2"]);
    small.wait_ready();
    let big = DataPlane::start(&cp.grpc_url(), "dp-big");
    let backend = FakeBackend::start("n");
    let mut s = Session::register(cp.registry, "n", "n-1");
    s.add_route("one.test", "/", &backend.url());
    s.add_route("two.test", "/", &backend.url());
    s.apply();
    s.add_route("three.test", "/", &backend.url());
    s.apply();
    assert_eq!(big.get("three.test", "/").status, 200);
    assert_eq!(
        small.get("three.test", "/").status,
        404,
        "the refused version is not served"
    );
    assert_eq!(
        small.get("one.test", "/").status,
        200,
        "the last good table still is"
    );
    let planes = dataplanes(&cp);
    let small_info = planes.iter().find(|p| p["node_id"] == "dp-small").unwrap();
    assert_eq!(small_info["acked_version"], 1);
    assert_eq!(small_info["lag"], 1);
    assert_eq!(small_info["last_nack"]["version"], 2);
    assert_eq!(
        small_info["last_nack"]["reason"],
        "3 routes is more than this data plane's limit of 2 (--max-routes)"
    );
    assert!(cp.proc.log_contains("data plane rejected a version"));
}

#[test]
fn porticoctl_watch_prints_each_push_and_its_answers() {
    let cp = ControlPlane::start();
    let _dps = [
        DataPlane::start(&cp.grpc_url(), "dp-a"),
        DataPlane::start(&cp.grpc_url(), "dp-b"),
    ];
    let mut watch = Command::new(bin("porticoctl"))
        .args(["--control-plane", &cp.grpc_url(), "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut s = Session::register(cp.registry, "w", "w-1");
    // The watch stream opens asynchronously: apply until a push is printed
    // (answers to a push from before the stream opened may come first).
    let mut applied = 0;
    let push = 'found: loop {
        applied += 1;
        s.add_route(&format!("w{applied}.test"), "/", "http://127.0.0.1:9");
        s.apply();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            if line.starts_with("push ") {
                break 'found line;
            }
        }
        assert!(applied < 20, "porticoctl watch printed no push");
    };
    let version: u64 = push["push v".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(push.contains(&format!("+[r{applied}]")), "{push}");
    assert!(push.ends_with("to [dp-a,dp-b]"), "{push}");
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an answer line");
        if line.contains(&format!(" v{version} ")) {
            answers.push(line);
        }
    }
    answers.sort();
    assert_eq!(
        answers,
        vec![
            format!("ack  v{version} dp-a"),
            format!("ack  v{version} dp-b")
        ]
    );
    let _ = watch.kill();
    let _ = watch.wait();
}
