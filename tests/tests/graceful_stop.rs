//! The data plane stops and upgrades without dropping a request: SIGTERM
//! drains (ready 503, delay, grace), SIGQUIT hands the listening sockets to a
//! new process, and the control plane sees a stopping plane as stopping.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portico_e2e::process::tempdir::TempDir;
use portico_e2e::*;
use serde_json::Value;

const EXIT: Duration = Duration::from_secs(15);

/// A control plane, one data plane started with `extra`, and a route
/// `app.stop.test` to `backend`.
fn setup(extra: &[&str], backend: &FakeBackend) -> (ControlPlane, DataPlane) {
    let cp = ControlPlane::start();
    let dp = DataPlane::spawn(&cp.grpc_url(), "dp-stop", extra);
    dp.wait_ready();
    let mut s = Session::register(cp.registry, "stop", "stop-1");
    s.add_route("app.stop.test", "/", &backend.url());
    s.apply();
    (cp, dp)
}

/// A GET on its own thread; returns the response or the error.
fn get_in_background(
    addr: SocketAddr,
    path: &str,
) -> std::thread::JoinHandle<std::io::Result<HttpResponse>> {
    let path = path.to_string();
    std::thread::spawn(move || http_get(addr, "app.stop.test", &path))
}

fn wait_log(proc: &portico_e2e::process::Proc, needle: &str) {
    wait_for(needle, Duration::from_secs(10), || {
        proc.log_contains(needle).then_some(())
    });
}

#[test]
fn a_request_in_flight_at_sigterm_completes_and_the_process_exits_after_it() {
    let backend = FakeBackend::start("slow");
    let (_cp, mut dp) = setup(&[], &backend);
    backend.set_delay(Duration::from_secs(2));
    let request = get_in_background(dp.proxy, "/");
    wait_for("the backend to see the request", EXIT, || {
        (backend.hits_for("/") >= 1).then_some(())
    });
    dp.proc.signal("TERM");
    wait_log(&dp.proc, "proxy listener closed");
    assert!(
        dp.proc.exited().is_none(),
        "the data plane must wait for the request in flight"
    );
    let response = request.join().unwrap().expect("the request in flight");
    assert_eq!((response.status, response.body.as_str()), (200, "slow"));
    let status = dp.proc.wait_exit(EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(dp.proc.log_contains("every request finished"));
}

#[test]
fn a_long_download_is_cut_when_the_grace_ends_and_the_process_exits() {
    let backend = FakeBackend::start("download");
    let (_cp, mut dp) = setup(&["--shutdown-grace", "2s"], &backend);
    let mut stream = TcpStream::connect(dp.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /download/60 HTTP/1.1\r\nHost: app.stop.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = stream.read(&mut buf).unwrap();
    assert!(received > 0, "the download started");
    let signalled = Instant::now();
    dp.proc.signal("TERM");
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    let cut_after = signalled.elapsed();
    println!("download cut {cut_after:?} after SIGTERM, {received} bytes received");
    assert!(
        received < 600 * 1024,
        "the 60 s download cannot have completed"
    );
    assert!(
        cut_after >= Duration::from_millis(1900),
        "cut before the grace ended: {cut_after:?}"
    );
    let status = dp.proc.wait_exit(EXIT);
    assert_eq!(status.code(), Some(0));
    assert!(dp.proc.log_contains("shutdown grace over"));
}

#[test]
fn ready_turns_503_at_once_and_new_connections_are_taken_until_the_delay_ends() {
    let backend = FakeBackend::start("delay");
    let (_cp, mut dp) = setup(&["--shutdown-delay", "1s"], &backend);
    assert_eq!(dp.ready_status(), Some(200));
    let signalled = Instant::now();
    dp.proc.signal("TERM");
    wait_for("/ready 503", Duration::from_secs(5), || {
        (dp.ready_status() == Some(503)).then_some(())
    });
    let to_503 = signalled.elapsed();
    println!("/ready answered 503 {to_503:?} after SIGTERM");
    assert!(to_503 < Duration::from_millis(100), "{to_503:?}");

    // Within the delay: accepted and served, told to close the connection.
    let during = dp.get("app.stop.test", "/");
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "the check ran within the delay"
    );
    assert_eq!(during.status, 200);
    assert_eq!(during.header("connection"), Some("close"));

    // After it: refused.
    wait_log(&dp.proc, "proxy listener closed");
    assert!(signalled.elapsed() >= Duration::from_millis(950));
    let refused = TcpStream::connect(dp.proxy).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(dp.proc.wait_exit(EXIT).code(), Some(0));
}

#[test]
fn a_second_interrupt_stops_at_once() {
    let backend = FakeBackend::start("interrupt");
    let (_cp, mut dp) = setup(&[], &backend);
    backend.set_delay(Duration::from_secs(30));
    let request = get_in_background(dp.proxy, "/");
    wait_for("the backend to see the request", EXIT, || {
        (backend.hits_for("/") >= 1).then_some(())
    });
    dp.proc.signal("INT");
    wait_log(&dp.proc, "proxy listener closed");
    assert!(dp.proc.exited().is_none(), "draining the request");
    dp.proc.signal("INT");
    assert_eq!(dp.proc.wait_exit(EXIT).code(), Some(0));
    assert!(dp.proc.log_contains("second signal: stopping at once"));
    assert!(request.join().unwrap().is_err(), "cut, not answered");
}

#[test]
fn an_upgrade_signal_with_no_new_process_waiting_changes_nothing() {
    let dir = TempDir::new("portico-no-upgrade");
    let sock = dir.path().join("upgrade.sock").display().to_string();
    let backend = FakeBackend::start("stays");
    let (_cp, dp) = setup(&["--upgrade-sock", &sock], &backend);
    dp.proc.signal("QUIT");
    wait_log(&dp.proc, "cannot hand off the listening sockets");
    assert_eq!(dp.ready_status(), Some(200));
    assert_eq!(dp.get("app.stop.test", "/").body, "stays");
}

fn plane_state(cp: &ControlPlane, node_id: &str) -> Option<String> {
    dataplanes(cp)
        .into_iter()
        .find(|p| p["node_id"] == node_id)
        .and_then(|p| p["state"].as_str().map(str::to_string))
}

#[test]
fn a_stopping_data_plane_is_shown_stopping_and_applies_do_not_wait_for_it() {
    let backend = FakeBackend::start("fleet");
    let cp = ControlPlane::start();
    let _a = DataPlane::start(&cp.grpc_url(), "dp-a");
    let mut b = DataPlane::start(&cp.grpc_url(), "dp-b");
    let mut s = Session::register(cp.registry, "stop", "stop-1");
    s.add_route("app.stop.test", "/", &backend.url());
    s.apply();
    backend.set_delay(Duration::from_secs(3));
    let request = get_in_background(b.proxy, "/");
    wait_for("the backend to see the request", EXIT, || {
        (backend.hits_for("/") >= 1).then_some(())
    });
    b.proc.signal("TERM");
    wait_for("dp-b stopping", EXIT, || {
        (plane_state(&cp, "dp-b").as_deref() == Some("stopping")).then_some(())
    });
    // Frozen, it could not acknowledge anything: the apply must not wait for it.
    b.proc.signal("STOP");
    s.add_route("later.stop.test", "/", &backend.url());
    s.apply();
    let report = wait_for("the apply's report", EXIT, || {
        cp.proc
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("data planes answered") && l.contains("version=Some(2)"))
            .cloned()
    });
    assert!(report.contains("acked=[\"dp-a\"]"), "{report}");
    assert!(report.contains("lagging=[]"), "{report}");
    b.proc.signal("CONT");
    assert_eq!(request.join().unwrap().expect("in flight").status, 200);
    assert_eq!(b.proc.wait_exit(EXIT).code(), Some(0));
    wait_for("dp-b stopped", EXIT, || {
        (plane_state(&cp, "dp-b").as_deref() == Some("stopped")).then_some(())
    });
    assert_eq!(plane_state(&cp, "dp-a").as_deref(), Some("connected"));
}

/// Outcome counts of a load run.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
}

/// Open-loop load: one request every `every` for `length`, each on its own
/// connection, sent on schedule whatever the previous ones are doing.
/// `send` makes one request and says how it went; `tally` counts, and can
/// be watched while the load runs.
fn open_loop(
    tally: Arc<Tally>,
    length: Duration,
    every: Duration,
    send: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> Arc<Tally> {
    let send = Arc::new(send);
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut next = started;
    while next < started + length {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let (tally, send) = (tally.clone(), send.clone());
        handles.push(std::thread::spawn(move || match send() {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.failed.lock().unwrap().push(e),
        }));
        next += every;
    }
    for h in handles {
        let _ = h.join();
    }
    tally
}

/// Waits until `tally` counts `ok` answered requests.
fn wait_answered(tally: &Tally, ok: u64) {
    wait_for(&format!("{ok} requests answered"), EXIT, || {
        (tally.ok.load(Ordering::Relaxed) >= ok).then_some(())
    });
}

fn expect_ok(response: std::io::Result<HttpResponse>) -> Result<(), String> {
    match response {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("status {}", r.status)),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn an_upgrade_under_load_hands_the_sockets_over_and_fails_no_request() {
    let dir = TempDir::new("portico-upgrade");
    let cache = dir.path().join("snapshot.json").display().to_string();
    let sock = dir.path().join("upgrade.sock").display().to_string();
    let backend = FakeBackend::start("upgrade");
    let flags = ["--snapshot-cache", &cache, "--upgrade-sock", &sock];
    let (cp, mut old) = setup(&flags, &backend);
    let (proxy, admin) = (old.proxy, old.admin);

    let tally = Arc::new(Tally::default());
    let load = {
        let tally = tally.clone();
        std::thread::spawn(move || {
            open_loop(
                tally,
                Duration::from_secs(10),
                Duration::from_millis(10),
                move || expect_ok(http_get(proxy, "app.stop.test", "/")),
            )
        })
    };
    // The upgrade comes once the old process has served for a while.
    wait_answered(&tally, 300);
    let mut args = vec![
        "--control-plane".to_string(),
        cp.grpc_url(),
        "--listen".into(),
        proxy.to_string(),
        "--admin-listen".into(),
        admin.to_string(),
        "--node-id".into(),
        "dp-new".into(),
        "--threads".into(),
        "1".into(),
        "--upgrade".into(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    // Started as systemd would: it says it is ready and is the main process.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let notify_env = notify_path.display().to_string();
    let mut new = portico_e2e::process::Proc::spawn_with_env(
        "portico-dp",
        &args,
        &[("NOTIFY_SOCKET", &notify_env)],
    );
    wait_log(
        &new,
        "waiting for the running portico-dp's listening sockets",
    );
    old.proc.signal("QUIT");
    wait_log(&old.proc, "listening sockets handed off");
    let mut message = [0u8; 256];
    let n = notify
        .recv(&mut message)
        .expect("the new process notifies systemd");
    assert_eq!(
        std::str::from_utf8(&message[..n]).unwrap(),
        format!("READY=1\nMAINPID={}\n", new.pid())
    );
    assert_eq!(old.proc.wait_exit(EXIT).code(), Some(0));
    let tally = load.join().unwrap();
    let failed = tally.failed.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    println!(
        "upgrade under load: {ok} requests ok, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok >= 900, "only {ok} requests were sent");

    // The new process serves, on the same addresses, and is in the fleet.
    assert!(new.exited().is_none());
    assert_eq!(
        http_get(proxy, "app.stop.test", "/").unwrap().body,
        "upgrade"
    );
    assert!(new.log_contains("connected to the control plane"));
    wait_for("dp-stop stopped, dp-new connected", EXIT, || {
        let planes: Vec<Value> = dataplanes(&cp);
        let state = |id: &str| {
            planes
                .iter()
                .find(|p| p["node_id"] == id)
                .map(|p| p["state"].clone())
        };
        (state("dp-stop") == Some("stopped".into()) && state("dp-new") == Some("connected".into()))
            .then_some(())
    });
    new.kill();
}

/// The connection failed before any answer came back: refused, reset, or
/// closed before the first byte.
fn connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
    )
}

#[test]
fn a_rolling_restart_of_two_data_planes_fails_no_request() {
    let backend = FakeBackend::start("rolling");
    let cp = ControlPlane::start();
    let mut planes = [
        DataPlane::start(&cp.grpc_url(), "dp-a"),
        DataPlane::start(&cp.grpc_url(), "dp-b"),
    ];
    let mut s = Session::register(cp.registry, "stop", "stop-1");
    s.add_route("app.stop.test", "/", &backend.url());
    s.apply();

    // The balancer: request n goes to target n % 2, and to the other one on
    // a connection error (refused, reset or closed before any answer), as
    // nginx's default `proxy_next_upstream error` does for a GET. A listener
    // that closes resets the connections still in its accept queue, and
    // Pingora closes those accepted whose request has not arrived yet.
    let targets = Arc::new(Mutex::new([planes[0].proxy, planes[1].proxy]));
    let next = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let load = {
        let (targets, retried, tally) = (targets.clone(), retried.clone(), tally.clone());
        std::thread::spawn(move || {
            open_loop(
                tally,
                Duration::from_secs(10),
                Duration::from_millis(10),
                move || {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let order = *targets.lock().unwrap();
                    let first = http_get(order[n % 2], "app.stop.test", "/");
                    match first {
                        Err(e) if connection_error(&e) => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            expect_ok(http_get(order[(n + 1) % 2], "app.stop.test", "/"))
                        }
                        other => expect_ok(other),
                    }
                },
            )
        })
    };
    wait_answered(&tally, 100);
    for (i, name) in ["dp-a2", "dp-b2"].into_iter().enumerate() {
        planes[i].proc.signal("TERM");
        assert_eq!(planes[i].proc.wait_exit(EXIT).code(), Some(0));
        let replacement = DataPlane::start(&cp.grpc_url(), name);
        // Like a load balancer's health check: in rotation once ready.
        targets.lock().unwrap()[i] = replacement.proxy;
        planes[i] = replacement;
        // Traffic reaches the replacement before the next plane stops.
        let served = tally.ok.load(Ordering::Relaxed);
        wait_answered(&tally, served + 100);
    }
    let tally = load.join().unwrap();
    let failed = tally.failed.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    println!(
        "rolling restart under load: {ok} requests ok, {} failed, {} retried on the other plane",
        failed.len(),
        retried.load(Ordering::Relaxed)
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok >= 900, "only {ok} requests were sent");
    assert_eq!(plane_state(&cp, "dp-a").as_deref(), Some("stopped"));
    assert_eq!(plane_state(&cp, "dp-b").as_deref(), Some("stopped"));
}
