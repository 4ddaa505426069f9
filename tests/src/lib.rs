//! End-to-end harness: starts the real `portico-cp` and `portico-dp`
//! binaries on ephemeral ports, fake HTTP backends, and small blocking
//! clients for the line protocol and HTTP. Every process dies with its handle.

pub mod acme;
pub mod backend;
pub mod client;
pub mod ctl;
pub mod dns;
pub mod edge;
pub mod etcd;
pub mod geoip;
pub mod h2;
pub mod process;
pub mod tls;

pub use backend::FakeBackend;
pub use client::{
    gunzip_base64, http_get, http_post, http_request, http_request_from, json_after, one_shot,
    HttpResponse, LineClient, Session,
};
pub use ctl::{ctl, dataplanes, wait_fleet, Watch};
pub use process::{ControlPlane, DataPlane};

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, failing after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A session's public handle as views and logs show it: the instance and
/// the first 8 hex digits of the SHA-256 of its id (docs/SECURITY.md).
pub fn handle(instance: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{instance}#{hex}")
}

/// The secret part of a session id (`instance-<32 hex>`): what no view,
/// log or backup may show.
pub fn secret_part(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}
