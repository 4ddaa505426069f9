//! One route's counters for `/metrics`: atomics counted on the request
//! path (a few relaxed adds per request), read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portico_proto::metrics::AtomicHistogram;

pub const CODES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Why an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
}

pub const KINDS: [&str; 3] = ["connect", "timeout", "reset"];

/// Which forwarding path served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Portico's own loop on pingora-core (`pipeline/forward.rs`).
    Fast = 0,
    /// `pingora-proxy` (`pipeline/proxy.rs`).
    Proxy = 1,
}

pub const PATHS: [&str; 2] = ["fast", "proxy"];

/// One route's counters since the data plane started.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// By status class; 1xx (websocket upgrades) count as 2xx.
    pub codes: [AtomicU64; 4],
    pub duration: AtomicHistogram,
    pub upstream_errors: [AtomicU64; 3],
    pub rate_limited: AtomicU64,
    /// By the path that served them.
    pub paths: [AtomicU64; 2],
    /// Refused by country (`geo_*`), by country code or `unknown`.
    pub geo_blocked: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl RouteMetrics {
    /// A request answered with `status` after `took`.
    pub fn request(&self, status: u16, took: Duration, path: Path) {
        let class = (status / 100).clamp(2, 5) as usize - 2;
        self.codes[class].fetch_add(1, Ordering::Relaxed);
        self.paths[path as usize].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn geo_blocked(&self, country: &str) {
        *self
            .geo_blocked
            .lock()
            .entry(country.to_string())
            .or_default() += 1;
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}
