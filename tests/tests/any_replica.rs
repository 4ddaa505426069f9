//! Any command on any replica (docs/HA.md): the seed's flow with a new
//! connection per command, rotating over three replicas on one etcd,
//! answers as a single control plane does, and every `OK` is served.

use std::net::SocketAddr;
use std::time::Duration;

use portico_e2e::etcd::Etcd;
use portico_e2e::*;

/// One connection, one command, `lines` lines read back: the `nc` style.
fn nc(addr: SocketAddr, line: &str, lines: usize) -> Vec<String> {
    let mut client = LineClient::connect(addr);
    client.send_raw(format!("{line}\n").as_bytes());
    client.shutdown_write();
    (0..lines).map(|_| client.read_line()).collect()
}

/// An answer with what differs from run to run masked: the session id,
/// numbers (route ids, counts, latencies, times).
fn masked(line: &str, session: &str) -> String {
    let line = line.replace(session, "S");
    let mut out = String::new();
    let mut in_number = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// Each command on a new connection to the next replica, its answers kept.
struct Rotation<'a> {
    registries: &'a [SocketAddr],
    turn: usize,
    session: String,
    answers: Vec<String>,
}

impl Rotation<'_> {
    fn next(&mut self) -> SocketAddr {
        self.turn += 1;
        self.registries[self.turn % self.registries.len()]
    }

    /// Sends `line` and keeps its `lines` answers, masked.
    fn say(&mut self, line: String, lines: usize) -> Vec<String> {
        let addr = self.next();
        let got = nc(addr, &line, lines);
        let session = self.session.clone();
        self.answers.extend(got.iter().map(|l| masked(l, &session)));
        got
    }
}

/// Runs the flow with each command on a new connection to the next of
/// `registries`; returns every answer, masked.
fn flow(registries: &[SocketAddr], dp: &DataPlane, backend: &FakeBackend) -> Vec<String> {
    let ack = nc(registries[0], "REGISTER|flow|f-1|0|{}", 1).remove(0);
    let id = ack.strip_prefix("ACK|").expect(&ack).to_string();
    let mut r = Rotation {
        registries,
        turn: 0,
        session: id.clone(),
        answers: vec![masked(&ack, &id)],
    };
    let url = backend.url();
    let mut routes = Vec::new();
    for (host, path) in [
        ("a.flow.test", "/"),
        ("b.flow.test", "/"),
        ("c.flow.test", "/api"),
    ] {
        let added = r.say(format!("ROUTE_ADD|{id}|{host}|{path}|{url}|0"), 1);
        routes.push(
            added[0]
                .strip_prefix("ROUTE_OK|")
                .expect(&added[0])
                .to_string(),
        );
    }
    r.say(format!("CONFIG_VALIDATE|{id}"), 1);
    r.say(format!("CONFIG_DIFF|{id}"), 1);
    assert_eq!(r.say(format!("CONFIG_APPLY|{id}"), 1), ["OK"]);
    // Served right after OK, whichever replica answered it.
    assert_eq!(dp.get("a.flow.test", "/").status, 200);
    assert_eq!(dp.get("b.flow.test", "/").status, 200);
    assert_eq!(dp.get("c.flow.test", "/api").status, 200);
    // The data plane's report reaches whichever replica runs the session.
    wait_for("the requests in the stats", Duration::from_secs(20), || {
        let addr = r.next();
        let stats = nc(addr, &format!("STATS_GET|{id}|{}", routes[0]), 1).remove(0);
        (json_after(&stats, "STATS_OK")["requests"] == 1).then_some(())
    });
    r.say(format!("STATS_GET|{id}|{}", routes[0]), 1);
    r.say(format!("CIRCUIT_BREAKER_STATUS|{id}|{}", routes[1]), 1);
    r.say(format!("DRAIN_START|{id}|1h"), 1);
    r.say(format!("DRAIN_STATUS|{id}"), 1);
    // ACK, then MAINT_OK on the same connection.
    r.say(format!("MAINT_ENTER|{id}|{}", routes[2]), 2);
    r.say(format!("MAINT_EXIT|{id}|{}", routes[2]), 2);
    r.say(format!("ROUTE_LIST|{id}"), 1);
    r.say(format!("CLIENT_SHUTDOWN|{id}"), 1);
    // The session is gone everywhere.
    for _ in registries {
        let addr = r.next();
        assert_eq!(
            nc(addr, &format!("PING|{id}"), 1),
            ["ERROR|invalid session"]
        );
    }
    assert_eq!(dp.get("a.flow.test", "/").status, 404);
    r.answers
}

#[test]
fn the_seed_flow_with_a_connection_per_command_works_on_any_replica() {
    let backend = FakeBackend::start("flow");
    let single = {
        let cp = ControlPlane::start();
        let dp = DataPlane::start(&cp.grpc_url(), "flow-dp");
        flow(&[cp.registry], &dp, &backend)
    };

    let etcd = Etcd::start();
    let cps = etcd.replicas("/any", 3);
    // The data plane is on the first replica; the session starts on the second.
    let dp = DataPlane::start(&cps[0].grpc_url(), "flow-dp");
    for cp in &cps {
        wait_fleet(cp, &["flow-dp"]);
    }
    let registries: Vec<SocketAddr> = cps.iter().map(|c| c.registry).collect();
    let replicated = flow(&registries, &dp, &backend);
    eprintln!("answers on three replicas: {replicated:#?}");
    assert_eq!(replicated, single);
}

#[test]
fn a_replica_that_dies_under_a_relayed_command_gives_a_clear_error_and_the_next_command_works() {
    let etcd = Etcd::start();
    let mut cps = etcd.replicas("/gone", 3);
    let dp = DataPlane::start(&cps[2].grpc_url(), "gone-dp");
    for cp in &cps {
        wait_fleet(cp, &["gone-dp"]);
    }
    let backend = FakeBackend::start("gone");
    // The session's home connection stays open on the first replica.
    let mut home = LineClient::connect(cps[0].registry);
    let id = home.register("gone", "g-1");
    let url = backend.url();
    let added = nc(
        cps[1].registry,
        &format!("ROUTE_ADD|{id}|kept.gone.test|/|{url}|0"),
        1,
    );
    assert!(added[0].starts_with("ROUTE_OK|"), "{added:?}");
    assert_eq!(
        nc(cps[2].registry, &format!("CONFIG_APPLY|{id}"), 1),
        ["OK"]
    );
    assert_eq!(dp.get("kept.gone.test", "/").status, 200);

    // Every replica's API says which replica runs the session.
    let runs_on = |cp: &ControlPlane| -> String {
        let reply = http_get(cp.admin, "localhost", "/api/v1/sessions").unwrap();
        let sessions: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let session = sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["instance"] == "g-1")
            .cloned()
            .unwrap_or_else(|| panic!("{sessions}"));
        session["replica"].as_str().unwrap().to_string()
    };
    let holder = runs_on(&cps[0]);
    assert!(!holder.is_empty());
    wait_for(
        "the others to see the session",
        Duration::from_secs(10),
        || (runs_on(&cps[1]) == holder && runs_on(&cps[2]) == holder).then_some(()),
    );

    // Subscribed through another replica, events come on the home connection.
    assert_eq!(
        nc(cps[1].registry, &format!("SUBSCRIBE|{id}|all"), 1),
        ["SUBSCRIBE_OK"]
    );
    let mut other = Session::register(cps[0].registry, "other", "o-1");
    other.add_route("other.gone.test", "/", &url);
    other.apply();
    let event = home.read_line();
    assert!(event.starts_with("EVENT|global_config_changed|"), "{event}");

    // A change staged through another replica, then the session's replica
    // frozen under the apply and killed.
    let staged = nc(
        cps[1].registry,
        &format!("ROUTE_ADD|{id}|lost.gone.test|/|{url}|0"),
        1,
    );
    assert!(staged[0].starts_with("ROUTE_OK|"), "{staged:?}");
    cps[0].proc.signal("STOP");
    let relay_to = cps[1].registry;
    let apply = std::thread::spawn({
        let id = id.clone();
        move || nc(relay_to, &format!("CONFIG_APPLY|{id}"), 1).remove(0)
    });
    cps[0].proc.kill();
    let reply = apply.join().unwrap();
    assert!(
        reply.starts_with(&format!(
            "ERROR|replica {holder} failed while running the command"
        )) && reply.contains("staged changes there are lost"),
        "{reply}"
    );

    // Nothing half-applied; the next command works on any replica.
    let list = json_after(
        &nc(cps[2].registry, &format!("ROUTE_LIST|{id}"), 1).remove(0),
        "ROUTE_LIST_OK",
    );
    let hosts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["domains"][0].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["kept.gone.test"], "{list}");
    assert_eq!(list[0]["status"], "active");
    assert_eq!(dp.get("lost.gone.test", "/").status, 404);
    assert_eq!(dp.get("kept.gone.test", "/").status, 200);
    let again = nc(
        cps[2].registry,
        &format!("ROUTE_ADD|{id}|again.gone.test|/|{url}|0"),
        1,
    );
    assert!(again[0].starts_with("ROUTE_OK|"), "{again:?}");
    assert_eq!(
        nc(cps[1].registry, &format!("CONFIG_APPLY|{id}"), 1),
        ["OK"]
    );
    assert_eq!(dp.get("again.gone.test", "/").status, 200);
    assert_ne!(runs_on(&cps[2]), holder);
}
