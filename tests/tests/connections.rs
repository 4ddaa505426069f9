//! Client connections: the keep-alive and header timeouts, the connection
//! limit, and what an idle keep-alive connection costs the data plane.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use portico_e2e::*;

const BOUND: Duration = Duration::from_secs(10);

fn setup(extra: &[&str]) -> (ControlPlane, DataPlane, FakeBackend) {
    let backend = FakeBackend::start("conns");
    let cp = ControlPlane::start();
    let dp = DataPlane::spawn(&cp.grpc_url(), "dp-conns", extra);
    dp.wait_ready();
    let mut s = Session::register(cp.registry, "conns", "conns-1");
    s.add_route("app.conns.test", "/", &backend.url());
    s.apply();
    (cp, dp, backend)
}

/// A kept-alive connection that has had one answered request.
fn kept_alive(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(BOUND)).unwrap();
    ask(&mut conn);
    conn
}

/// One keep-alive request on `conn`; panics unless it is answered 200.
fn ask(conn: &mut TcpStream) {
    if let Err(e) = try_ask(conn) {
        panic!("{e}");
    }
}

/// One keep-alive request on `conn`, answered 200, or why not.
fn try_ask(conn: &mut TcpStream) -> Result<(), String> {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app.conns.test\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The fake backend answers with a 5-byte body, "conns".
    while !got.ends_with(b"conns") {
        let n = conn.read(&mut buf).map_err(|e| format!("no answer: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    if !got.starts_with(b"HTTP/1.1 200") {
        return Err(String::from_utf8_lossy(&got).to_string());
    }
    Ok(())
}

/// Waits (bounded) until the peer closes `conn`; returns how long it took.
fn closed_after(conn: &mut TcpStream) -> Duration {
    let started = Instant::now();
    conn.set_read_timeout(Some(BOUND)).unwrap();
    let mut buf = [0u8; 1024];
    match conn.read(&mut buf) {
        Ok(0) => started.elapsed(),
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => started.elapsed(),
        Err(e) => panic!("not closed within {BOUND:?}: {e}"),
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let (_cp, dp, _b) = setup(&["--keepalive-timeout", "1s"]);
    let mut conn = kept_alive(dp.proxy);
    let idle = closed_after(&mut conn);
    assert!(idle >= Duration::from_millis(900), "closed early: {idle:?}");
    // A busy one is not: requests 0.5 s apart keep it open.
    let mut busy = kept_alive(dp.proxy);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        ask(&mut busy);
    }
}

#[test]
fn a_client_that_does_not_finish_its_request_head_in_time_is_closed() {
    let (_cp, dp, backend) = setup(&["--header-timeout", "1s"]);
    // Silent after connecting.
    let mut silent = TcpStream::connect(dp.proxy).unwrap();
    assert!(closed_after(&mut silent) >= Duration::from_millis(900));
    // Slow loris: a byte every 200 ms never finishes the head.
    let mut loris = TcpStream::connect(dp.proxy).unwrap();
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: app.conns.test\r\nX-Slow: ";
    let mut cut = false;
    for byte in head.iter().chain(std::iter::repeat(&b'a')) {
        if loris.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(started.elapsed() < BOUND, "the slow head was not cut");
    }
    assert!(cut);
    let lasted = started.elapsed();
    println!("slow-loris head cut after {lasted:?} (--header-timeout 1s)");
    assert!(lasted >= Duration::from_millis(900), "{lasted:?}");
    // The same on a kept-alive connection: its next head gets 1 s too.
    let mut conn = kept_alive(dp.proxy);
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app.co").unwrap();
    closed_after(&mut conn);
    // A request whose head is whole in time is served, however slow its answer.
    backend.set_delay(Duration::from_secs(2));
    assert_eq!(dp.get("app.conns.test", "/").status, 200);
}

#[test]
fn connections_beyond_the_limit_are_closed_at_accept_and_the_others_keep_working() {
    let (_cp, dp, _b) = setup(&["--max-client-connections", "5"]);
    let mut held: Vec<TcpStream> = (0..5).map(|_| kept_alive(dp.proxy)).collect();
    let mut extra = TcpStream::connect(dp.proxy).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: app.conns.test\r\n\r\n");
    closed_after(&mut extra);
    for conn in &mut held {
        ask(conn);
    }
    let counts = dp.counts();
    assert_eq!(counts["client_connections"], 5);
    assert!(counts["client_connections_refused"].as_u64() >= Some(1));
    assert!(dp.proc.log_contains("too many client connections"));
    // The slots free as the data plane sees the connections close.
    drop(held);
    wait_for("a slot to free", BOUND, || {
        let mut c = TcpStream::connect(dp.proxy).ok()?;
        c.set_read_timeout(Some(BOUND)).ok()?;
        try_ask(&mut c).ok()
    });
}

#[test]
fn a_pooled_backend_connection_is_reused_then_closed_after_the_upstream_idle_timeout() {
    let (_cp, dp, backend) = setup(&["--upstream-idle-timeout", "1s"]);
    let get = |path: &str| {
        let got = http_get(dp.proxy, "app.conns.test", path).expect("an answer");
        assert_eq!(got.status, 200, "{path}: {}", got.body);
    };
    get("/pooled");
    get("/pooled-again");
    assert_eq!(
        backend.connections_for("/pooled"),
        (1, 1),
        "the second request reused the pooled connection"
    );
    assert_eq!(backend.connections_for("/pooled-again"), (0, 0));
    wait_for("the idle pooled connection closed", BOUND, || {
        (backend.connections_for("/pooled") == (1, 0)).then_some(())
    });
    get("/after-idle");
    assert_eq!(
        backend.connections_for("/after-idle").0,
        1,
        "a new backend connection after the pooled one was closed"
    );
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn an_idle_keep_alive_connection_costs_under_8_kb() {
    const CONNS: usize = 3000;
    const FIRST: usize = 1000;
    raise_open_files((FIRST + CONNS) as u64 + 512);
    let (_cp, dp, _b) = setup(&[]);
    // The slope from FIRST to FIRST + CONNS held connections: what the
    // process allocates once (pools, timer wheels, allocator pages for
    // per-request state) is paid before the first measure.
    let first: Vec<TcpStream> = (0..FIRST).map(|_| kept_alive(dp.proxy)).collect();
    wait_client_connections(&dp, FIRST as u64);
    let before = rss_kb(dp.proc.pid());
    let held: Vec<TcpStream> = (0..CONNS).map(|_| kept_alive(dp.proxy)).collect();
    wait_client_connections(&dp, (FIRST + CONNS) as u64);
    let per_conn = (rss_kb(dp.proc.pid()).saturating_sub(before)) as f64 / CONNS as f64;
    println!("{CONNS} more idle keep-alive connections: {per_conn:.2} KB each");
    assert!(per_conn < 8.0, "{per_conn:.2} KB per idle connection");
    drop((first, held));
}

/// Waits until the data plane counts `open` client connections (those
/// just closed by the client are seen closed, the new ones parked idle).
fn wait_client_connections(dp: &DataPlane, open: u64) {
    wait_for(&format!("{open} client connections"), BOUND, || {
        (dp.counts()["client_connections"].as_u64() == Some(open)).then_some(())
    });
}

fn raise_open_files(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            assert!(
                limit.rlim_max >= want,
                "the hard open-file limit is too low"
            );
            limit.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}
