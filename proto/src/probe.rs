//! HTTP probes both planes run: health checks and BACKEND_TEST on data
//! planes, maintenance reachability on the control plane. `GET path`, no
//! redirects followed, bounded in time.

use std::sync::OnceLock;
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

fn client(verify: bool, h2c: bool) -> &'static reqwest::Client {
    static CLIENTS: [OnceLock<reqwest::Client>; 4] = [const { OnceLock::new() }; 4];
    let cell = &CLIENTS[usize::from(verify) * 2 + usize::from(h2c)];
    cell.get_or_init(|| {
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
        builder.build().expect("building the probe client")
    })
}

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

async fn get(url: &str, verify: bool, h2c: bool, timeout: Duration) -> Result<u16, String> {
    let response = client(verify, h2c)
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(response.status().as_u16())
}

/// BACKEND_TEST: `GET path`; a TLS backend whose certificate does not
/// verify is tried again without verification, to report `tls_valid`.
pub async fn probe(url: &BackendUrl, path: &str, timeout: Duration) -> ProbeResult {
    run(url, path, timeout, Mode::default(), true).await
}

/// A health check: like [`probe`], but a certificate that does not verify
/// is a failure, as it is for proxied traffic.
pub async fn check(url: &BackendUrl, path: &str, timeout: Duration, mode: Mode) -> ProbeResult {
    run(url, path, timeout, mode, false).await
}

async fn run(
    url: &BackendUrl,
    path: &str,
    timeout: Duration,
    mode: Mode,
    lenient_retry: bool,
) -> ProbeResult {
    let target = probe_url(url, path);
    let started = Instant::now();
    let tls = matches!(url.scheme, Scheme::Https | Scheme::Wss);
    let h2c = mode.http2 && !tls;
    let mut outcome = get(&target, true, h2c, timeout).await;
    let mut tls_valid = tls && outcome.is_ok();
    if tls && outcome.is_err() && lenient_retry {
        let remaining = timeout.saturating_sub(started.elapsed());
        if let Ok(status) = get(&target, false, h2c, remaining.max(Duration::from_millis(1))).await
        {
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
