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

fn client(verify: bool) -> &'static reqwest::Client {
    static STRICT: OnceLock<reqwest::Client> = OnceLock::new();
    static LENIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let cell = if verify { &STRICT } else { &LENIENT };
    cell.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(0)
            .tls_danger_accept_invalid_certs(!verify)
            .build()
            .expect("building the probe client")
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

async fn get(url: &str, verify: bool, timeout: Duration) -> Result<u16, String> {
    let response = client(verify)
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(response.status().as_u16())
}

pub async fn probe(url: &BackendUrl, path: &str, timeout: Duration) -> ProbeResult {
    let target = probe_url(url, path);
    let started = Instant::now();
    let tls = matches!(url.scheme, Scheme::Https | Scheme::Wss);
    let mut outcome = get(&target, true, timeout).await;
    let mut tls_valid = tls && outcome.is_ok();
    if tls && outcome.is_err() {
        // Retry without verification: reachable with an invalid certificate.
        let remaining = timeout.saturating_sub(started.elapsed());
        if let Ok(status) = get(&target, false, remaining.max(Duration::from_millis(1))).await {
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
            if !probe(url, "/", Duration::from_secs(1)).await.healthy() {
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
