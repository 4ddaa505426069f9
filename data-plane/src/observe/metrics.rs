//! The data plane's Prometheus metrics (`GET /metrics` on the admin
//! listener): the per-route atomics of `route_metrics.rs`, read at scrape
//! time with the table's routes for their labels.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_proto::metrics::{render_into, Family, Kind};

use crate::backends::runtime::Availability;
use crate::config::live::Live;
use crate::observe::route_metrics::{RouteMetrics, CODES, KINDS};

/// A page rendered less than this ago is served again: rendering 10,000
/// routes costs ~20 ms of CPU, so scrapes in a tight loop cost at most that
/// per second (and concurrent scrapes wait for one render).
const REUSE_FOR: Duration = Duration::from_secs(1);

/// The page `GET /metrics` serves: at most [`REUSE_FOR`] old.
pub fn page(live: &Live) -> Arc<String> {
    let mut slot = live.metrics_page.lock();
    if let Some((at, page)) = &*slot {
        if at.elapsed() < REUSE_FOR {
            return page.clone();
        }
    }
    let last = slot.as_ref().map_or(0, |(_, page)| page.len());
    let page = Arc::new(scrape(live, last + last / 8));
    *slot = Some((Instant::now(), page.clone()));
    page
}

/// The text exposition of every metric, read without stopping traffic;
/// `capacity` is a guess of its length.
pub fn scrape(live: &Live, capacity: usize) -> String {
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
    let now = std::time::SystemTime::now();
    let table = live.table.load();
    for route in table.routes() {
        let id = route.spec.route_id.as_str();
        add_route(id, &route.spec.service, &route.runtime.metrics);
        let labels = [("route_id", id), ("backend", &*route.backend_url)];
        let healthy = route.backend.availability(None, now) == Availability::Ready;
        up.add(&labels, f64::from(u8::from(healthy)));
        // A route without a breaker cannot have one open.
        if route.policy.breaker.is_some() {
            open.add(&labels, f64::from(u8::from(route.backend.breaker_open())));
        }
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
    connected.add(
        &[],
        f64::from(u8::from(live.registry.outbound.is_connected())),
    );
    let mut dropped = Family::new(
        "portico_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind.",
        Kind::Counter,
    );
    if let Some(log) = &live.access_log {
        dropped.add(&[], log.dropped() as f64);
    }
    let mut page = String::with_capacity(capacity);
    render_into(
        vec![
            requests, duration, upstream, up, open, limited, version, connected, dropped,
        ],
        &mut page,
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_lists_every_route_and_pages_are_reused() {
        let live = Live::default();
        let specs: Vec<Arc<portico_proto::RouteSpec>> = (0..10_000)
            .map(|i| {
                let wire = portico_proto::v1::Route {
                    route_id: format!("r{i}"),
                    service: "svc".into(),
                    domains: vec![format!("h{i}.test")],
                    path: "/".into(),
                    backend_url: format!("http://127.0.0.1:{}", 1000 + i % 1000),
                    ..Default::default()
                };
                Arc::new(portico_proto::RouteSpec::try_from(&wire).unwrap())
            })
            .collect();
        let table = crate::config::table::RouteTable::compile(&specs, &live.registry).unwrap();
        live.table.store(Arc::new(table));
        let started = std::time::Instant::now();
        let text = scrape(&live, 0);
        eprintln!(
            "scrape of 10,000 routes: {:?}, {} bytes",
            started.elapsed(),
            text.len()
        );
        assert_eq!(text.matches("portico_backend_up{").count(), 10_000);
        assert!(
            !text.contains("portico_circuit_breaker_open{"),
            "no breaker, no series"
        );
        let again = page(&live);
        assert!(
            Arc::ptr_eq(&again, &page(&live)),
            "a page is reused within a second"
        );
    }
}
