//! The two forwarding paths: what the fast path carries (and how it edits
//! the head), what it leaves to pingora-proxy (replayed intact), and that
//! `portico_requests_by_path_total` says which path served each request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use portico_e2e::edge::{curl_https, TestCa};
use portico_e2e::process::tempdir::TempDir;
use portico_e2e::{http_get, ControlPlane, DataPlane, Session};

const BOUND: Duration = Duration::from_secs(10);

/// A backend that answers each request with the head it received, a blank
/// line and the body it received (Content-Length or chunked, decoded).
struct Echo {
    addr: SocketAddr,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || echo(conn));
            }
        });
        Echo { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn echo(conn: TcpStream) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let mut body = Vec::new();
        if let Some(n) = length {
            body.resize(n, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                let mut size = String::new();
                let _ = reader.read_line(&mut size);
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let mut answer = head.into_bytes();
        answer.extend_from_slice(b"\r\n");
        answer.extend_from_slice(&body);
        let out = reader.get_mut();
        let framing = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if out.write_all(framing.as_bytes()).is_err() || out.write_all(&answer).is_err() {
            return;
        }
    }
}

/// One request written as given (in `parts`, with a pause between them) on
/// a new connection; the status and the body of the answer.
fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(BOUND)).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // The next part comes in a read of its own.
            std::thread::sleep(Duration::from_millis(100));
        }
        conn.write_all(part).unwrap();
    }
    read_response(&mut BufReader::new(conn))
}

/// One response (with a Content-Length) from `reader`: its status and body.
fn read_response(reader: &mut impl BufRead) -> (u16, Vec<u8>) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body)
}

/// Requests the data plane counted for the route on each path, (fast, proxy),
/// once they are (a request is counted after its response went out, and
/// `/metrics` is rendered at most once a second): waits for `want`, and
/// returns what was counted last.
fn served_by(dp: &DataPlane, route: &str, want: (u64, u64)) -> (u64, u64) {
    let count = |page: &str, path: &str| {
        let series =
            format!("portico_requests_by_path_total{{route_id=\"{route}\",path=\"{path}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    };
    let mut last = (0, 0);
    let deadline = std::time::Instant::now() + BOUND;
    while std::time::Instant::now() < deadline {
        let page = http_get(dp.admin, "localhost", "/metrics").unwrap().body;
        last = (count(&page, "fast"), count(&page, "proxy"));
        if last == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

fn setup(dp_args: &[&str]) -> (ControlPlane, DataPlane, Echo, String) {
    let cp = ControlPlane::start();
    let dp = DataPlane::spawn(&cp.grpc_url(), "dp-fast", dp_args);
    dp.wait_ready();
    let backend = Echo::start();
    let mut s = Session::register(cp.registry, "fast", "fast-1");
    let route = s.add_route("fast.test", "/", &backend.url());
    s.apply();
    (cp, dp, backend, route)
}

#[test]
fn the_fast_path_forwards_heads_edited_and_bodies_intact() {
    let (_cp, dp, _backend, route) = setup(&[]);
    let (status, body) = exchange(
        dp.proxy,
        &[
            b"GET /a?b=c HTTP/1.1\r\nHost: fast.test\r\nConnection: keep-alive, X-Hop\r\n\
            X-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n\
            X-Kept: yes\r\n\r\n",
        ],
    );
    assert_eq!(status, 200);
    let seen = String::from_utf8(body).unwrap().to_ascii_lowercase();
    assert!(seen.starts_with("get /a?b=c http/1.1\r\n"), "{seen}");
    for wanted in [
        "host: fast.test",
        "x-kept: yes",
        "x-forwarded-for: 10.0.0.1, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-request-id: ",
    ] {
        assert!(seen.contains(wanted), "{wanted} in {seen}");
    }
    for dropped in ["x-hop", "keep-alive", "connection", "te:"] {
        assert!(!seen.contains(dropped), "{dropped} in {seen}");
    }

    // A body up to 64 KiB (with a Content-Length) goes the fast way too.
    let payload = vec![b'p'; 20_000];
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: fast.test\r\nContent-Length: 20000\r\n\r\n".to_vec();
    request.extend_from_slice(&payload);
    let (status, body) = exchange(dp.proxy, &[&request]);
    assert_eq!(status, 200);
    assert!(body.ends_with(&payload), "the body arrived whole");

    // Several requests on one kept-alive connection.
    let mut conn = TcpStream::connect(dp.proxy).unwrap();
    conn.set_read_timeout(Some(BOUND)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for i in 0..3 {
        write!(conn, "GET /k{i} HTTP/1.1\r\nHost: fast.test\r\n\r\n").unwrap();
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, 200);
        assert!(body.starts_with(format!("GET /k{i} ").as_bytes()));
    }
    assert_eq!(served_by(&dp, &route, (5, 0)), (5, 0));
}

#[test]
fn what_the_fast_path_leaves_goes_through_pingora_proxy_intact() {
    let (_cp, dp, _backend, route) = setup(&[]);
    // A body over 64 KiB.
    let payload = vec![b'q'; 200_000];
    let mut large =
        b"POST /large HTTP/1.1\r\nHost: fast.test\r\nContent-Length: 200000\r\n\r\n".to_vec();
    large.extend_from_slice(&payload);
    let (status, body) = exchange(dp.proxy, &[&large]);
    assert_eq!(status, 200);
    assert!(body.ends_with(&payload), "the large body arrived whole");

    // A chunked body, whose first chunk came with the head (replayed).
    let (status, body) = exchange(
        dp.proxy,
        &[
            b"POST /chunked HTTP/1.1\r\nHost: fast.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"6\r\n world\r\n0\r\n\r\n",
        ],
    );
    assert_eq!(status, 200);
    assert!(
        body.ends_with(b"hello world"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // A head that did not come whole in the first read.
    let (status, body) = exchange(
        dp.proxy,
        &[b"GET /split HTTP/1.1\r\nHo", b"st: fast.test\r\n\r\n"],
    );
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("GET /split HTTP/1.1"));

    assert_eq!(served_by(&dp, &route, (0, 3)), (0, 3));

    // A malformed head is answered 400, as pingora-proxy answers it.
    let (status, _) = exchange(
        dp.proxy,
        &[b"GET / HTTP/1.1\r\nHost: fast.test\r\nno colon here\r\n\r\n"],
    );
    assert_eq!(status, 400);
}

#[test]
fn with_the_fast_path_off_every_request_goes_through_pingora_proxy() {
    let (_cp, dp, _backend, route) = setup(&["--fast-path", "off"]);
    let (status, _) = exchange(dp.proxy, &[b"GET / HTTP/1.1\r\nHost: fast.test\r\n\r\n"]);
    assert_eq!(status, 200);
    assert_eq!(served_by(&dp, &route, (0, 1)), (0, 1));
}

#[test]
fn http2_clients_over_tls_take_the_fast_path() {
    let dir = TempDir::new("portico-fast-h2");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = TestCa::new(dir.path());
    ca.issue(&["fast.test"], -1, 30).write(&certs, "fast");
    let cp = ControlPlane::start_with(&["--cert-dir", &certs.display().to_string()]);
    let mut dp = DataPlane::spawn(&cp.grpc_url(), "dp-h2", &["--listen-tls", "127.0.0.1:0"]);
    let tls = dp.proc.listening("tls");
    dp.wait_ready();
    let backend = Echo::start();
    let mut s = Session::register(cp.registry, "fast", "fast-1");
    let route = s.add_route("fast.test", "/", &backend.url());
    s.apply();
    let made = std::cell::Cell::new(0);
    portico_e2e::wait_for("the certificate served", BOUND, || {
        let got = curl_https(tls, "fast.test", "/h2", &ca.pem, &["--http2"]);
        // Those that reached the data plane are counted.
        made.set(made.get() + u64::from(got.out.starts_with("200")));
        (got.out == "200 2").then_some(())
    });
    // The body too this time: curl writes it, then the status and version.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(["--resolve", &format!("fast.test:{}:127.0.0.1", tls.port())])
        .arg("--cacert")
        .arg(&ca.pem)
        .arg(format!("https://fast.test:{}/h2", tls.port()))
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap();
    assert_eq!(last, "200 2", "{text}");
    let seen = body.to_ascii_lowercase();
    assert!(seen.starts_with("get /h2 http/1.1\r\n"), "{seen}");
    assert!(seen.contains("host: fast.test"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: https"), "{seen}");
    let want = (made.get() + 1, 0);
    assert_eq!(served_by(&dp, &route, want), want);
}
