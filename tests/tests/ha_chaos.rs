//! Chaos, bounded in time: three control-plane replicas on one etcd, four
//! data planes, twenty sessions applying without pause (half on one
//! connection that RECONNECTs when its replica dies, half with a new
//! connection per command on the next replica), and a replica SIGKILLed and
//! started again every 5 s for 60 s. Nothing acknowledged is lost, nothing
//! refused appears, nothing staged is applied twice, no live session is
//! called invalid, the fleet converges, and a steady route never fails.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portico_e2e::etcd::Etcd;
use portico_e2e::*;

const SESSIONS: usize = 20;
const CHAOS: Duration = Duration::from_secs(60);
const KILL_EVERY: Duration = Duration::from_secs(5);

/// A registry connection that reports a broken link instead of panicking.
struct Link {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Link {
    fn open(addr: SocketAddr) -> std::io::Result<Link> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Link {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn send(&mut self, line: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        self.reader.read_line(&mut reply)?;
        if !reply.ends_with('\n') {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(reply.trim_end().to_string())
    }
}

/// What the sessions were told: the hosts whose apply answered OK, ERROR,
/// or nothing (the replica died under it: either outcome is allowed).
#[derive(Default)]
struct Outcomes {
    ok: Vec<String>,
    error: Vec<(String, String)>,
    unknown: Vec<String>,
    /// Answers that must never come: `invalid session` for a live session.
    wrong: Vec<String>,
    /// Each rotating session's id, for the final check of its routes.
    rotating: Vec<String>,
}

/// How a command sent on a new connection ended.
enum Sent {
    Reply(String),
    /// The connection broke after the command went out: it may have run.
    Unknown,
}

/// Sends `line` on a new connection to the next replica that accepts one.
fn send_anywhere(registries: &[SocketAddr], at: &mut usize, line: &str) -> Sent {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no replica took {line}");
        *at = (*at + 1) % registries.len();
        let Ok(mut link) = Link::open(registries[*at]) else {
            continue;
        };
        return match link.send(line) {
            Ok(reply) => Sent::Reply(reply),
            Err(_) => Sent::Unknown,
        };
    }
}

/// The status of `host` among the session's routes (`None`: not there);
/// asked again after an `ERROR` saying the session's replica failed.
fn status_of(registries: &[SocketAddr], at: &mut usize, id: &str, host: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "ROUTE_LIST|{id} never answered");
        let Sent::Reply(reply) = send_anywhere(registries, at, &format!("ROUTE_LIST|{id}")) else {
            continue;
        };
        if reply.contains("failed while running") {
            continue;
        }
        let list = json_after(&reply, "ROUTE_LIST_OK");
        return list.as_array().unwrap().iter().find_map(|r| {
            (r["domains"][0] == host).then(|| r["status"].as_str().unwrap().to_string())
        });
    }
}

/// One session as a client behind a load balancer sees the registry: each
/// command on a new connection to the next replica. An `ERROR` saying the
/// replica running the session failed, or a connection broken under a
/// command, is followed by `ROUTE_LIST` to see what happened.
fn run_rotating(
    i: usize,
    registries: Vec<SocketAddr>,
    backend: String,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let mut at = i % registries.len();
    let id = loop {
        if let Sent::Reply(ack) =
            send_anywhere(&registries, &mut at, &format!("REGISTER|svc{i}|one|0|{{}}"))
        {
            break ack.strip_prefix("ACK|").expect("ACK").to_string();
        }
    };
    outcomes.lock().unwrap().rotating.push(id.clone());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let host = format!("s{i}-{n}.test");
        let add = format!("ROUTE_ADD|{id}|{host}|/|{backend}|0");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stage = true;
        let outcome = loop {
            assert!(Instant::now() < deadline, "{host} was never applied");
            if stage {
                match send_anywhere(&registries, &mut at, &add) {
                    Sent::Reply(reply) if reply.starts_with("ROUTE_OK|") => {}
                    // Not staged: its replica failed, or it moved as it came.
                    Sent::Reply(reply)
                        if reply.contains("staged changes there are lost")
                            || reply.contains("try again") =>
                    {
                        continue
                    }
                    Sent::Reply(reply) => {
                        let wrong = format!("{add}: {reply}");
                        outcomes.lock().unwrap().wrong.push(wrong);
                        continue;
                    }
                    Sent::Unknown => {
                        if status_of(&registries, &mut at, &id, &host).is_none() {
                            continue;
                        }
                    }
                }
                stage = false;
            }
            match send_anywhere(&registries, &mut at, &format!("CONFIG_APPLY|{id}")) {
                Sent::Reply(reply) if reply == "OK" => break Ok(()),
                Sent::Reply(reply) if reply.contains("invalid session") => {
                    let wrong = format!("CONFIG_APPLY: {reply}");
                    outcomes.lock().unwrap().wrong.push(wrong);
                }
                _ => {}
            }
            // Any other answer, or none: it ran or it did not. Active: it
            // ran. Still staged: apply again. Gone (staged changes lost with
            // a replica): stage it again.
            match status_of(&registries, &mut at, &id, &host).as_deref() {
                Some("active") => break Err(String::new()),
                Some(_) => {}
                None => stage = true,
            }
        };
        let mut out = outcomes.lock().unwrap();
        match outcome {
            Ok(()) => out.ok.push(host),
            Err(reply) if reply.is_empty() => out.unknown.push(host),
            Err(reply) => out.error.push((host, reply)),
        }
    }
}

/// One session: stages and applies a new host at a time; when its replica
/// goes away it RECONNECTs to the next replica that answers.
fn run_session(
    i: usize,
    registries: Vec<SocketAddr>,
    backend: String,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let mut at = i % registries.len();
    let mut link = Link::open(registries[at]).expect("the first registry");
    let id = link
        .send(&format!("REGISTER|svc{i}|one|0|{{}}"))
        .expect("REGISTER")
        .strip_prefix("ACK|")
        .expect("ACK")
        .to_string();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let host = format!("s{i}-{n}.test");
        let applied = link
            .send(&format!("ROUTE_ADD|{id}|{host}|/|{backend}|0"))
            .and_then(|added| {
                assert!(added.starts_with("ROUTE_OK|"), "{added}");
                link.send(&format!("CONFIG_APPLY|{id}"))
            });
        let mut out = outcomes.lock().unwrap();
        match applied {
            Ok(reply) if reply == "OK" => out.ok.push(host),
            Ok(reply) => out.error.push((host, reply)),
            Err(_) => {
                out.unknown.push(host);
                drop(out);
                // Its replica died: any other takes the session over.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    assert!(Instant::now() < deadline, "session {id} found no replica");
                    at = (at + 1) % registries.len();
                    let reconnected = Link::open(registries[at]).and_then(|mut l| {
                        let reply = l.send(&format!("RECONNECT|{id}"))?;
                        Ok((l, reply))
                    });
                    match reconnected {
                        Ok((l, reply)) if reply == "OK" => {
                            link = l;
                            break;
                        }
                        Ok((_, reply)) => panic!("RECONNECT|{id} answered {reply}"),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
    }
}

#[test]
fn chaos_replicas_killed_and_restarted_lose_nothing_and_drop_no_request() {
    let etcd = Etcd::start();
    let mut cps = etcd.replicas("/chaos", 3);
    let urls: Vec<String> = cps.iter().map(|c| c.grpc_url()).collect();
    // Each data plane starts on a different replica and knows all three.
    let dps: Vec<DataPlane> = (0..4)
        .map(|i| {
            let mut list = urls.clone();
            list.rotate_left(i % 3);
            DataPlane::start(&list.join(","), &format!("chaos-dp-{i}"))
        })
        .collect();
    let nodes: Vec<String> = (0..4).map(|i| format!("chaos-dp-{i}")).collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    for cp in &cps {
        wait_fleet(cp, &nodes);
    }
    let backend = FakeBackend::start("chaos");
    let mut steady = Session::register(cps[0].registry, "steady", "st-1");
    steady.add_route("steady.test", "/", &backend.url());
    steady.apply();

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let traffic = {
        let proxies: Vec<SocketAddr> = dps.iter().map(|d| d.proxy).collect();
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for proxy in &proxies {
                    match http_get(*proxy, "steady.test", "/") {
                        Ok(r) if r.status == 200 => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failed
                            .lock()
                            .unwrap()
                            .push(format!("{proxy}: {:?}", other.map(|r| r.status))),
                    }
                }
            }
        })
    };
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let registries: Vec<SocketAddr> = cps.iter().map(|c| c.registry).collect();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (registries, backend, stop, outcomes) = (
                registries.clone(),
                backend.url(),
                stop.clone(),
                outcomes.clone(),
            );
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    run_session(i, registries, backend, stop, outcomes)
                } else {
                    run_rotating(i, registries, backend, stop, outcomes)
                }
            })
        })
        .collect();

    // A fixed pseudo-random order of victims, so a failure can be replayed.
    let started = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    while started.elapsed() < CHAOS {
        std::thread::sleep(KILL_EVERY);
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let victim = (seed >> 33) as usize % cps.len();
        cps[victim].proc.kill();
        cps[victim].start_again();
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for s in sessions {
        s.join().expect("a session");
    }
    traffic.join().expect("the steady traffic");
    let outcomes = outcomes.lock().unwrap();
    eprintln!(
        "chaos: {kills} kills, {} OK, {} ERROR, {} unknown, {} steady requests served",
        outcomes.ok.len(),
        outcomes.error.len(),
        outcomes.unknown.len(),
        served.load(Ordering::Relaxed)
    );
    assert!(outcomes.ok.len() > SESSIONS, "the sessions made progress");
    assert!(
        outcomes.wrong.is_empty(),
        "wrong answers: {:?}",
        outcomes.wrong
    );
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} steady requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // Every replica and every data plane end at the same version.
    let version = wait_for("the replicas to agree", Duration::from_secs(20), || {
        let versions: Vec<u64> = cps
            .iter()
            .map(|cp| {
                let snapshot: serde_json::Value =
                    serde_json::from_str(&ctl(cp, &["snapshot", "--json"])).unwrap();
                snapshot["version"].as_u64().unwrap()
            })
            .collect();
        versions
            .windows(2)
            .all(|w| w[0] == w[1])
            .then(|| versions[0])
    });
    for dp in &dps {
        wait_for(
            "the data plane at the final version",
            Duration::from_secs(20),
            || (dp.config()["version"] == version).then_some(()),
        );
    }
    // Nothing staged was applied twice: each host once among a session's routes.
    for id in &outcomes.rotating {
        let mut at = 0;
        let registries: Vec<SocketAddr> = cps.iter().map(|c| c.registry).collect();
        let Sent::Reply(reply) = send_anywhere(&registries, &mut at, &format!("ROUTE_LIST|{id}"))
        else {
            panic!("ROUTE_LIST after the chaos");
        };
        let list = json_after(&reply, "ROUTE_LIST_OK");
        let mut hosts: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["domains"][0].as_str().unwrap())
            .collect();
        let all = hosts.len();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), all, "a host applied twice: {list}");
    }
    // What got OK is served everywhere; what got ERROR nowhere.
    for dp in &dps {
        for host in &outcomes.ok {
            assert_eq!(dp.get(host, "/").status, 200, "{host} got OK");
        }
        for (host, reply) in &outcomes.error {
            assert_eq!(dp.get(host, "/").status, 404, "{host} got {reply}");
        }
    }
}
