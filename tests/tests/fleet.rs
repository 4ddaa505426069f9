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

/// `/ready` of a data plane; `None` while its admin listener is not up yet.
#[test]
fn a_data_plane_given_several_control_planes_follows_the_next_when_its_own_goes_away() {
    let mut first = ControlPlane::start();
    let second = ControlPlane::start();
    let backend = FakeBackend::start("replica");
    let mut s = Session::register(second.registry, "replica", "replica-1");
    s.add_route("replica.test", "/", &backend.url());
    s.apply();
    let urls = format!("{},{}", first.grpc_url(), second.grpc_url());
    let dp = DataPlane::start(&urls, "dp-follows");
    // It dialled the first url, which serves no route.
    assert_eq!(dataplanes(&first)[0]["state"], "connected");
    assert_eq!(dp.get("replica.test", "/").status, 404);

    first.proc.kill();
    wait_for(
        "the data plane on the second control plane",
        Duration::from_secs(10),
        || {
            let planes = dataplanes(&second);
            planes
                .iter()
                .any(|p| p["node_id"] == "dp-follows" && p["state"] == "connected")
                .then_some(())
        },
    );
    wait_for(
        "the second control plane's route served",
        Duration::from_secs(10),
        || (dp.get("replica.test", "/").status == 200).then_some(()),
    );
    assert!(dp.proc.log_contains("control plane link down"));
}

fn ready_json(dp: &DataPlane) -> Option<(u16, Value)> {
    let r = http_get(dp.admin, "localhost", "/ready").ok()?;
    Some((r.status, serde_json::from_str(&r.body).unwrap()))
}

#[test]
fn a_restarted_data_plane_catches_up_with_deltas_before_it_is_ready() {
    // The applies made while it is down wait the fleet grace for it; a short
    // one keeps that wait well inside the line client's 10 s read timeout.
    let cp = ControlPlane::start_with(&["--fleet-grace", "2s"]);
    let dir = portico_e2e::process::tempdir::TempDir::new("portico-cache");
    let cache = dir.path().join("snapshot.pb");
    let cache_arg = cache.display().to_string();
    let backend = FakeBackend::start("c");
    let mut s = Session::register(cp.registry, "c", "c-1");
    let mut dp = DataPlane::spawn(
        &cp.grpc_url(),
        "dp-cache",
        &["--snapshot-cache", &cache_arg],
    );
    dp.wait_ready();
    for i in 0..3 {
        s.add_route(&format!("c{i}.test"), "/", &backend.url());
        s.apply();
    }
    assert!(cache.exists(), "acknowledged configurations are cached");
    dp.proc.kill();
    for i in 3..5 {
        s.add_route(&format!("c{i}.test"), "/", &backend.url());
        s.apply();
    }
    dp = DataPlane::spawn(
        &cp.grpc_url(),
        "dp-cache",
        &["--snapshot-cache", &cache_arg],
    );
    let (status, body) = wait_for("ready again", Duration::from_secs(15), || {
        ready_json(&dp).filter(|(status, _)| *status == 200)
    });
    assert_eq!(status, 200);
    assert_eq!(body["version"], 5, "caught up before /ready turned 200");
    assert_eq!(body["source"], "control_plane");
    assert!(dp.proc.log_contains("serving the cached configuration"));
    assert!(
        dp.proc.log_contains("kind=\"delta\""),
        "{}",
        dp.proc.log_text()
    );
    assert!(
        !dp.proc.log_contains("kind=\"snapshot\""),
        "no full snapshot was needed"
    );
    dp.wait_ready();
    assert_eq!(dp.get("c4.test", "/").status, 200);
}

#[test]
fn a_data_plane_serves_its_cache_when_the_control_plane_is_away() {
    let mut cp = ControlPlane::start();
    let dir = portico_e2e::process::tempdir::TempDir::new("portico-cache");
    let cache_arg = dir.path().join("snapshot.pb").display().to_string();
    let backend = FakeBackend::start("cold");
    let mut dp = DataPlane::spawn(&cp.grpc_url(), "dp-cold", &["--snapshot-cache", &cache_arg]);
    dp.wait_ready();
    let mut s = Session::register(cp.registry, "cold", "cold-1");
    s.add_route("cold.test", "/", &backend.url());
    s.apply();
    dp.proc.kill();
    cp.proc.kill();
    dp = DataPlane::spawn(&cp.grpc_url(), "dp-cold", &["--snapshot-cache", &cache_arg]);
    wait_for("serving from the cache", Duration::from_secs(10), || {
        http_get(dp.proxy, "cold.test", "/")
            .ok()
            .filter(|r| r.status == 200)
    });
    let (status, body) = ready_json(&dp).expect("the admin listener is up");
    assert_eq!(status, 503, "not ready until the control plane confirms");
    assert_eq!(body["source"], "cache");
    assert!(dp.proc.log_contains("serving the cached configuration"));
    cp.start_again();
    let (_, body) = wait_for(
        "ready with the control plane",
        Duration::from_secs(15),
        || ready_json(&dp).filter(|(status, _)| *status == 200),
    );
    assert_eq!(body["source"], "control_plane");
    assert_eq!(dp.get("cold.test", "/").status, 200);
}

#[test]
fn a_one_route_change_costs_the_same_with_10000_routes_loaded() {
    let cp = ControlPlane::start();
    let _dp = DataPlane::start(&cp.grpc_url(), "dp-big");
    let watch = Watch::start(&cp, "push");
    let rx = &watch.events;
    let one_route_push = |tag: &str, rx: &mpsc::Receiver<Value>| -> u64 {
        let mut s = Session::register(cp.registry, "small", tag);
        s.add_route(&format!("{tag}.small.test"), "/", "http://127.0.0.1:9");
        s.apply();
        loop {
            let push = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a push event");
            if push["added"].as_array().unwrap().len() == 1 {
                return push["bytes"].as_u64().unwrap();
            }
        }
    };
    // Let the watch stream open, then measure a one-route change with few routes.
    let mut small = 0;
    for i in 0..20 {
        let mut s = Session::register(cp.registry, "warm", &format!("warm-{i}"));
        s.add_route(&format!("warm{i}.test"), "/", "http://127.0.0.1:9");
        s.apply();
        if let Ok(push) = rx.recv_timeout(Duration::from_millis(300)) {
            small = push["bytes"].as_u64().unwrap();
            break;
        }
    }
    assert!(small > 0, "the watch stream never opened");
    let mut big = Session::register(cp.registry, "big", "big-1");
    for batch in 0..200 {
        let items: Vec<Value> = (0..50)
            .map(|i| serde_json::json!({"domains": [format!("h{batch}-{i}.big.test")], "path": "/", "backend_url": "http://127.0.0.1:9"}))
            .collect();
        let reply = big.cmd("ROUTE_ADD_BULK", &Value::Array(items).to_string());
        assert!(reply.starts_with("ROUTE_BULK_OK|"));
    }
    big.apply();
    let loaded: Value = serde_json::from_str(&ctl(&cp, &["snapshot", "--json"])).unwrap();
    assert!(loaded["routes"].as_array().unwrap().len() > 10_000);
    let with_many = one_route_push("after", rx);
    println!("one-route push: {small} bytes with few routes, {with_many} bytes with 10,000 loaded");
    assert!(with_many < 1024, "a one-route push is {with_many} bytes");
    assert!(
        with_many <= small + 16,
        "{with_many} bytes with 10,000 routes, {small} with few"
    );
}

/// Generic gRPC tools work against the control plane: the standard health
/// service answers SERVING and server reflection lists the services.
#[test]
fn grpc_health_and_reflection_are_served() {
    let cp = ControlPlane::start();
    let url = cp.grpc_url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in [
            "",
            "portico.v1.OperatorService",
            "portico.v1.DataPlaneService",
        ] {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{service:?}"
            );
        }
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected reflection answer {answer:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "portico.v1.OperatorService",
            "portico.v1.DataPlaneService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} not in {names:?}"
            );
        }
    });
}

#[test]
fn tls_between_the_planes_refuses_a_data_plane_without_a_valid_certificate() {
    use portico_e2e::tls::Pki;
    let dir = portico_e2e::process::tempdir::TempDir::new("portico-pki");
    let pki = Pki::generate(dir.path(), false);
    let cp = ControlPlane::start_with(&refs(&pki.server_args()));
    let url = format!("https://localhost:{}", cp.grpc.port());
    let trusted = DataPlane::spawn(&url, "dp-tls", &refs(&pki.client_args(&pki.ca)));
    trusted.wait_ready();
    let backend = FakeBackend::start("tls");
    let mut s = Session::register(cp.registry, "tls", "tls-1");
    s.add_route("tls-planes.test", "/", &backend.url());
    s.apply();
    assert_eq!(trusted.get("tls-planes.test", "/").status, 200);

    // No client certificate, or one from another authority: refused.
    let anonymous = DataPlane::spawn(
        &url,
        "dp-anonymous",
        &["--tls-ca", &pki.ca.display().to_string()],
    );
    let rogue_dir = portico_e2e::process::tempdir::TempDir::new("portico-pki-rogue");
    let rogue = Pki::generate(rogue_dir.path(), true);
    let impostor = DataPlane::spawn(&url, "dp-impostor", &refs(&rogue.client_args(&pki.ca)));
    for dp in [&anonymous, &impostor] {
        wait_for(
            "a refused connection attempt",
            Duration::from_secs(10),
            || {
                dp.proc
                    .log_contains("control plane link down")
                    .then_some(())
            },
        );
        assert_eq!(dp.ready_status(), Some(503));
    }
    let planes = ctl_tls(&cp, &pki);
    assert_eq!(
        planes
            .iter()
            .map(|p| p["node_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["dp-tls"]
    );
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn ctl_tls(cp: &ControlPlane, pki: &portico_e2e::tls::Pki) -> Vec<Value> {
    let out = Command::new(bin("porticoctl"))
        .args([
            "--control-plane",
            &format!("https://localhost:{}", cp.grpc.port()),
        ])
        .args(pki.client_args(&pki.ca))
        .args(["dataplanes", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}
