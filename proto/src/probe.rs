//! HTTP probes both planes run: health checks and BACKEND_TEST on data
//! planes, maintenance reachability on the control plane. `GET path`, no
//! redirects followed, bounded in time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{BackendUrl, Scheme};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub status_code: Option<u16>,
    pub response_time_ms: u64,
    /// For https/wss: the certificate verified. Always false for plain http.
    pub tls_valid: bool,
    pub error: Option<String>,
}

impl ProbeResult {
    /// Why the probe failed, in the words events use.
    pub fn reason(&self) -> String {
        match (&self.error, self.status_code) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("status {s}"),
            (None, None) => "unreachable".into(),
        }
    }

    /// Reachable and answering below 500.
    pub fn healthy(&self) -> bool {
        self.status_code.is_some_and(|s| s < 500)
    }
}

static EXTRA_CA: OnceLock<reqwest::Certificate> = OnceLock::new();

/// Trusts one more certificate authority (PEM) for TLS probes, besides the
/// system roots. Call before the first probe.
pub fn trust_ca(pem: &[u8]) -> Result<(), String> {
    let cert =
        reqwest::Certificate::from_pem(pem).map_err(|e| format!("invalid CA certificate: {e}"))?;
    EXTRA_CA
        .set(cert)
        .map_err(|_| "a CA is already trusted".to_string())
}

/// How a probe talks to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode {
    /// HTTP/2: negotiated over TLS, prior knowledge (h2c) over plain TCP.
    pub http2: bool,
}

fn build_client(verify: bool, h2c: bool, pin: Option<(&str, SocketAddr)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .tls_danger_accept_invalid_certs(!verify);
    if let Some(ca) = EXTRA_CA.get() {
        builder = builder.add_root_certificate(ca.clone());
    }
    if h2c {
        builder = builder.http2_prior_knowledge();
    }
    if let Some((host, addr)) = pin {
        builder = builder.resolve(host, addr);
    }
    builder.build().expect("building the probe client")
}

/// The client for a probe; one pinned to `addr` when the url names a host,
/// so each address of a name is probed on its own (with the name as Host and
/// TLS server name). Pinned clients are kept for the next probe.
fn client(verify: bool, h2c: bool, url: &BackendUrl, addr: Option<SocketAddr>) -> reqwest::Client {
    static CLIENTS: [OnceLock<reqwest::Client>; 4] = [const { OnceLock::new() }; 4];
    static PINNED: Mutex<Option<HashMap<PinKey, reqwest::Client>>> = Mutex::new(None);
    let Some(addr) = addr.filter(|_| url.host.parse::<IpAddr>().is_err()) else {
        let cell = &CLIENTS[usize::from(verify) * 2 + usize::from(h2c)];
        return cell.get_or_init(|| build_client(verify, h2c, None)).clone();
    };
    let key = (url.host.clone(), addr, verify, h2c);
    let mut pinned = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    let pinned = pinned.get_or_insert_with(HashMap::new);
    if let Some(c) = pinned.get(&key) {
        return c.clone();
    }
    // Addresses come and go; a bounded cache forgets them all at once.
    if pinned.len() >= MAX_PINNED {
        pinned.clear();
    }
    let c = build_client(verify, h2c, Some((&url.host, addr)));
    pinned.insert(key, c.clone());
    c
}

type PinKey = (String, SocketAddr, bool, bool);
const MAX_PINNED: usize = 1024;

fn probe_url(url: &BackendUrl, path: &str) -> String {
    let scheme = if url.scheme.is_tls() { "https" } else { "http" };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    format!("{scheme}://{host}:{}{path}", url.port)
}

/// Describes a failed request the way the protocol shows it: "connection refused".
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timeout".into();
    }
    let mut source: Option<&dyn std::error::Error> = Some(err);
    let mut last = err.to_string();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "timeout".into(),
                _ => io.to_string(),
            };
        }
        last = e.to_string();
        source = e.source();
    }
    last
}

async fn get(client: reqwest::Client, url: &str, timeout: Duration) -> Result<u16, String> {
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(response.status().as_u16())
}

/// BACKEND_TEST: `GET path`; a TLS backend whose certificate does not
/// verify is tried again without verification, to report `tls_valid`.
/// `addr`, when given, is where the url's host is reached.
pub async fn probe_at(
    url: &BackendUrl,
    addr: Option<SocketAddr>,
    path: &str,
    timeout: Duration,
) -> ProbeResult {
    run(url, addr, path, timeout, Mode::default(), true).await
}

/// BACKEND_TEST with the system's resolver.
pub async fn probe(url: &BackendUrl, path: &str, timeout: Duration) -> ProbeResult {
    probe_at(url, None, path, timeout).await
}

/// A health check: like [`probe_at`], but a certificate that does not
/// verify is a failure, as it is for proxied traffic.
pub async fn check_at(
    url: &BackendUrl,
    addr: Option<SocketAddr>,
    path: &str,
    timeout: Duration,
    mode: Mode,
) -> ProbeResult {
    run(url, addr, path, timeout, mode, false).await
}

/// A health check with the system's resolver.
pub async fn check(url: &BackendUrl, path: &str, timeout: Duration, mode: Mode) -> ProbeResult {
    check_at(url, None, path, timeout, mode).await
}

async fn run(
    url: &BackendUrl,
    addr: Option<SocketAddr>,
    path: &str,
    timeout: Duration,
    mode: Mode,
    lenient_retry: bool,
) -> ProbeResult {
    let target = probe_url(url, path);
    let started = Instant::now();
    let tls = matches!(url.scheme, Scheme::Https | Scheme::Wss);
    let h2c = mode.http2 && !tls;
    let mut outcome = get(client(true, h2c, url, addr), &target, timeout).await;
    let mut tls_valid = tls && outcome.is_ok();
    if tls && outcome.is_err() && lenient_retry {
        let remaining = timeout.saturating_sub(started.elapsed());
        let lenient = client(false, h2c, url, addr);
        if let Ok(status) = get(lenient, &target, remaining.max(Duration::from_millis(1))).await {
            outcome = Ok(status);
            tls_valid = false;
        }
    }
    let response_time_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(status) => ProbeResult {
            status_code: Some(status),
            response_time_ms,
            tls_valid,
            error: None,
        },
        Err(error) => ProbeResult {
            status_code: None,
            response_time_ms,
            tls_valid: false,
            error: Some(error),
        },
    }
}

/// Probes every url once a second until all answer below 500 or `limit` passes.
pub async fn wait_healthy(urls: Vec<BackendUrl>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let mut all = true;
        for url in &urls {
            if !check(url, "/", Duration::from_secs(1), Mode::default())
                .await
                .healthy()
            {
                all = false;
                break;
            }
        }
        if all {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline - now)).await;
    }
}
