//! A fake HTTP/1.1 backend: answers every request with its name, counts
//! requests per path, can answer another status or answer slowly (except on
//! `/health`, which always answers 200), serves `/download/<secs>` as a slow
//! download, and can be stopped (listener and open connections closed).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FakeBackend {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// The last request head seen, for header assertions.
    pub last_request: Arc<Mutex<String>>,
    behaviour: Arc<Behaviour>,
    tls: bool,
    /// The accept loop, joined on stop so the listener is closed by then.
    accept_loop: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Behaviour {
    status: AtomicU16,
    delay_ms: AtomicU64,
    per_path: Mutex<HashMap<String, PathCounts>>,
}

/// What one path saw.
#[derive(Default, Clone, Copy)]
struct PathCounts {
    requests: u64,
    /// Connections whose first request was for the path: accepted, and
    /// still open.
    connections: u64,
    open: u64,
}

/// A connection counted open under its first request's path until dropped.
struct OpenConn<'a> {
    behaviour: &'a Behaviour,
    path: String,
}

impl<'a> OpenConn<'a> {
    fn new(behaviour: &'a Behaviour, path: &str) -> OpenConn<'a> {
        let mut paths = behaviour.per_path.lock().unwrap();
        let counts = paths.entry(path.to_string()).or_default();
        counts.connections += 1;
        counts.open += 1;
        OpenConn {
            behaviour,
            path: path.to_string(),
        }
    }
}

impl Drop for OpenConn<'_> {
    fn drop(&mut self) {
        if let Some(counts) = self.behaviour.per_path.lock().unwrap().get_mut(&self.path) {
            counts.open -= 1;
        }
    }
}

impl FakeBackend {
    pub fn start(name: &str) -> FakeBackend {
        Self::start_with(name, None, "127.0.0.1:0")
    }

    /// A backend on a given address (`127.0.0.2:0`, or a port another
    /// backend has on another loopback address), for names with several
    /// addresses.
    pub fn start_on(name: &str, bind: &str) -> FakeBackend {
        Self::start_with(name, None, bind)
    }

    /// A backend speaking TLS with a self-signed certificate for `localhost`
    /// and 127.0.0.1; returns it and the certificate (PEM) to trust.
    pub fn start_tls(name: &str) -> (FakeBackend, String) {
        let (acceptor, pem) = crate::tls::self_signed_acceptor();
        let mut backend = Self::start_with(name, Some(acceptor), "127.0.0.1:0");
        backend.tls = true;
        (backend, pem)
    }

    fn start_with(name: &str, tls: Option<openssl::ssl::SslAcceptor>, bind: &str) -> FakeBackend {
        let listener = TcpListener::bind(bind).expect("binding a fake backend");
        let tls = tls.map(std::sync::Arc::new);
        let addr = listener.local_addr().unwrap();
        let backend = FakeBackend {
            addr,
            name: name.to_string(),
            hits: Arc::default(),
            stopped: Arc::default(),
            conns: Arc::default(),
            last_request: Arc::default(),
            behaviour: Arc::new(Behaviour {
                status: AtomicU16::new(200),
                ..Default::default()
            }),
            tls: false,
            accept_loop: Mutex::default(),
        };
        let (hits, stopped, conns, last, behaviour) = (
            backend.hits.clone(),
            backend.stopped.clone(),
            backend.conns.clone(),
            backend.last_request.clone(),
            backend.behaviour.clone(),
        );
        let body = name.to_string();
        let accept_loop = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(clone) = stream.try_clone() {
                    conns.lock().unwrap().push(clone);
                }
                let (hits, last, body, behaviour, tls) = (
                    hits.clone(),
                    last.clone(),
                    body.clone(),
                    behaviour.clone(),
                    tls.clone(),
                );
                std::thread::spawn(move || match tls {
                    None => serve(stream, &hits, &last, &body, &behaviour),
                    Some(acceptor) => {
                        if let Ok(tls_stream) = acceptor.accept(stream) {
                            serve(tls_stream, &hits, &last, &body, &behaviour);
                        }
                    }
                });
            }
        });
        *backend.accept_loop.lock().unwrap() = Some(accept_loop);
        backend
    }

    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Acquire)
    }

    /// Requests seen for one path (probes use `/` or `/health`).
    pub fn hits_for(&self, path: &str) -> u64 {
        self.counts_for(path).requests
    }

    /// Connections whose first request was for `path`: how many were
    /// accepted, and how many are still open (closed by the peer or not).
    pub fn connections_for(&self, path: &str) -> (u64, u64) {
        let counts = self.counts_for(path);
        (counts.connections, counts.open)
    }

    fn counts_for(&self, path: &str) -> PathCounts {
        self.behaviour
            .per_path
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    /// The status every path but `/health` answers from now on.
    pub fn set_status(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::Release);
    }

    /// How long every path but `/health` waits before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Release);
    }

    /// Stops accepting and closes every open connection. Returns once the
    /// listener is closed: a connection attempt after this is refused, never
    /// queued in the backlog and then reset.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept_loop) = self.accept_loop.lock().unwrap().take() {
            let _ = accept_loop.join();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve<S: Read + Write>(
    stream: S,
    hits: &AtomicU64,
    last: &Mutex<String>,
    body: &str,
    behaviour: &Behaviour,
) {
    let mut reader = BufReader::new(stream);
    let mut open: Option<OpenConn> = None;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push_str(&line);
        }
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let health = path == "/health";
        open.get_or_insert_with(|| OpenConn::new(behaviour, &path));
        behaviour
            .per_path
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .requests += 1;
        hits.fetch_add(1, Ordering::AcqRel);
        *last.lock().unwrap() = head;
        let (status, delay) = if health {
            (200, 0)
        } else {
            (
                behaviour.status.load(Ordering::Acquire),
                behaviour.delay_ms.load(Ordering::Acquire),
            )
        };
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let download = path
            .strip_prefix("/download/")
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(secs) = download {
            trickle(reader.get_mut(), secs);
            return;
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: {body}\r\n\r\n{body}",
            body.len()
        );
        if reader.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A download that takes `secs` seconds: 1 KiB every 100 ms, then the
/// connection closes.
fn trickle<S: Write>(stream: &mut S, secs: u64) {
    let chunks = secs * 10;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        chunks * 1024
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    for _ in 0..chunks {
        if stream
            .write_all(&[b'x'; 1024])
            .and_then(|_| stream.flush())
            .is_err()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
