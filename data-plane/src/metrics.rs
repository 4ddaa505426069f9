//! The data plane's Prometheus metrics (`GET /metrics` on the admin
//! listener): per-route atomics counted on the request path and read here,
//! at scrape time, with the table's routes for their labels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portico_proto::metrics::{render, AtomicHistogram, Family, Kind};

use crate::config::Live;
use crate::runtime::Availability;

const CODES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Why an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
}

const KINDS: [&str; 3] = ["connect", "timeout", "reset"];

/// One route's counters since the data plane started.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// By status class; 1xx (websocket upgrades) count as 2xx.
    codes: [AtomicU64; 4],
    duration: AtomicHistogram,
    upstream_errors: [AtomicU64; 3],
    rate_limited: AtomicU64,
}

impl RouteMetrics {
    /// A request answered with `status` after `took`.
    pub fn request(&self, status: u16, took: Duration) {
        let class = (status / 100).clamp(2, 5) as usize - 2;
        self.codes[class].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}

/// The text exposition of every metric, read without stopping traffic.
pub fn scrape(live: &Live) -> String {
    let mut requests = Family::new(
        "portico_requests_total",
        "Requests proxied or answered, by route and status class.",
        Kind::Counter,
    );
    let mut duration = Family::new(
        "portico_request_duration_seconds",
        "From request start to response end.",
        Kind::Histogram,
    );
    let mut upstream = Family::new(
        "portico_upstream_errors_total",
        "Failed upstream attempts, by kind.",
        Kind::Counter,
    );
    let mut up = Family::new(
        "portico_backend_up",
        "1 while the route's backend is healthy, 0 when down.",
        Kind::Gauge,
    );
    let mut open = Family::new(
        "portico_circuit_breaker_open",
        "1 while the route backend's circuit breaker is open.",
        Kind::Gauge,
    );
    let mut limited = Family::new(
        "portico_rate_limited_total",
        "Requests refused by the route's rate limit.",
        Kind::Counter,
    );
    let mut add_route = |route_id: &str, service: &str, m: &RouteMetrics| {
        if m.duration.count() > 0 {
            for (code, n) in CODES.iter().zip(&m.codes) {
                let labels = [("route_id", route_id), ("service", service), ("code", code)];
                requests.add(&labels, n.load(Ordering::Relaxed) as f64);
            }
            duration.add_histogram(&[("route_id", route_id), ("service", service)], &m.duration);
        }
        for (kind, n) in KINDS.iter().zip(&m.upstream_errors) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                upstream.add(&[("route_id", route_id), ("kind", kind)], n as f64);
            }
        }
        let n = m.rate_limited.load(Ordering::Relaxed);
        if n > 0 {
            limited.add(&[("route_id", route_id)], n as f64);
        }
    };
    add_route("", "", &live.unrouted);
    let table = live.table.load();
    for route in table.routes() {
        let id = route.spec.route_id.as_str();
        add_route(id, &route.spec.service, &route.runtime.metrics);
        let backend = route.spec.backend.to_string();
        let labels = [("route_id", id), ("backend", backend.as_str())];
        let healthy = route
            .backend
            .availability(None, std::time::SystemTime::now())
            == Availability::Ready;
        up.add(&labels, f64::from(u8::from(healthy)));
        open.add(&labels, f64::from(u8::from(route.backend.breaker_open())));
    }
    let mut version = Family::new(
        "portico_config_version",
        "The configuration version served.",
        Kind::Gauge,
    );
    version.add(&[], live.version.load(Ordering::Acquire) as f64);
    let mut connected = Family::new(
        "portico_control_plane_connected",
        "1 while the stream to the control plane is up.",
        Kind::Gauge,
    );
    connected.add(&[], f64::from(u8::from(live.outbound.is_connected())));
    let mut dropped = Family::new(
        "portico_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind.",
        Kind::Counter,
    );
    if let Some(log) = &live.access_log {
        dropped.add(&[], log.dropped() as f64);
    }
    render(vec![
        requests, duration, upstream, up, open, limited, version, connected, dropped,
    ])
}
