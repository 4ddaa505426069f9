//! The data plane's Prometheus metrics (`GET /metrics` on the admin
//! listener): the per-route atomics of `route_metrics.rs`, read at scrape
//! time with the table's routes for their labels.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_proto::metrics::{render_into, Family, Kind, Metric};

use crate::backends::runtime::Availability;
use crate::config::live::Live;
use crate::observe::route_metrics::{RouteMetrics, CODES, KINDS, PATHS};

pub static REQUESTS_TOTAL: Metric = Metric {
    name: "portico_requests_total",
    help: "Requests proxied or answered, by route and status class (code 2xx, 3xx, 4xx, 5xx; a websocket upgrade counts as 2xx); requests that match no route have route_id=\"\" and service=\"\".",
    kind: Kind::Counter,
    labels: &["route_id", "service", "code"],
};

pub static REQUEST_DURATION_SECONDS: Metric = Metric {
    name: "portico_request_duration_seconds",
    help: "Request start to response end.",
    kind: Kind::Histogram,
    labels: &["route_id", "service"],
};

pub static UPSTREAM_ERRORS_TOTAL: Metric = Metric {
    name: "portico_upstream_errors_total",
    help: "Failed upstream attempts (retries included) and responses cut, by kind: connect, timeout, reset.",
    kind: Kind::Counter,
    labels: &["route_id", "kind"],
};

pub static BACKEND_UP: Metric = Metric {
    name: "portico_backend_up",
    help: "1 while any address of the route's backend passes its probe, 0 when none does.",
    kind: Kind::Gauge,
    labels: &["route_id", "backend"],
};

pub static CIRCUIT_BREAKER_OPEN: Metric = Metric {
    name: "portico_circuit_breaker_open",
    help: "1 while the breaker of any address of the route's backend is open; listed for routes that have a breaker.",
    kind: Kind::Gauge,
    labels: &["route_id", "backend"],
};

pub static RATE_LIMITED_TOTAL: Metric = Metric {
    name: "portico_rate_limited_total",
    help: "Requests answered 429 by the route's rate limit.",
    kind: Kind::Counter,
    labels: &["route_id"],
};

pub static CONFIG_VERSION: Metric = Metric {
    name: "portico_config_version",
    help: "The configuration version served.",
    kind: Kind::Gauge,
    labels: &[],
};

pub static CONTROL_PLANE_CONNECTED: Metric = Metric {
    name: "portico_control_plane_connected",
    help: "1 while the stream to the control plane is up.",
    kind: Kind::Gauge,
    labels: &[],
};

pub static ACCESS_LOG_DROPPED_TOTAL: Metric = Metric {
    name: "portico_access_log_dropped_total",
    help: "Access-log lines dropped because the writer fell behind (with --access-log).",
    kind: Kind::Counter,
    labels: &[],
};

pub static REQUESTS_BY_PATH_TOTAL: Metric = Metric {
    name: "portico_requests_by_path_total",
    help: "Requests by the forwarding path that served them: path=\"fast\" (Portico's own loop on pingora-core) or \"proxy\" (pingora-proxy: upgrades, compression, HTTP/2 backends, chunked or large request bodies, and every request with --fast-path off).",
    kind: Kind::Counter,
    labels: &["route_id", "path"],
};

pub static CLIENT_ADDRESS_MALFORMED_TOTAL: Metric = Metric {
    name: "portico_client_address_malformed_total",
    help: "Requests from a trusted proxy (--trusted-proxies) whose X-Forwarded-For or Forwarded did not parse; the connection's address was used.",
    kind: Kind::Counter,
    labels: &[],
};

pub static GEO_BLOCKED_TOTAL: Metric = Metric {
    name: "portico_geo_blocked_total",
    help: "Requests refused by a route's geo_allow / geo_deny, by the client's country (ISO code, or unknown when the GeoIP database does not know the address).",
    kind: Kind::Counter,
    labels: &["route_id", "country"],
};

/// Every family the data plane exports, in scrape order.
pub static METRICS: [&Metric; 12] = [
    &REQUESTS_TOTAL,
    &REQUESTS_BY_PATH_TOTAL,
    &REQUEST_DURATION_SECONDS,
    &UPSTREAM_ERRORS_TOTAL,
    &BACKEND_UP,
    &CIRCUIT_BREAKER_OPEN,
    &RATE_LIMITED_TOTAL,
    &CONFIG_VERSION,
    &CONTROL_PLANE_CONNECTED,
    &ACCESS_LOG_DROPPED_TOTAL,
    &CLIENT_ADDRESS_MALFORMED_TOTAL,
    &GEO_BLOCKED_TOTAL,
];

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
    let mut requests = Family::new(&REQUESTS_TOTAL);
    let mut duration = Family::new(&REQUEST_DURATION_SECONDS);
    let mut upstream = Family::new(&UPSTREAM_ERRORS_TOTAL);
    let mut up = Family::new(&BACKEND_UP);
    let mut open = Family::new(&CIRCUIT_BREAKER_OPEN);
    let mut limited = Family::new(&RATE_LIMITED_TOTAL);
    let mut by_path = Family::new(&REQUESTS_BY_PATH_TOTAL);
    let mut geo = Family::new(&GEO_BLOCKED_TOTAL);
    let mut add_route = |route_id: &str, service: &str, m: &RouteMetrics| {
        if m.duration.count() > 0 {
            for (code, n) in CODES.iter().zip(&m.codes) {
                let labels = [("route_id", route_id), ("service", service), ("code", code)];
                requests.add(&labels, n.load(Ordering::Relaxed) as f64);
            }
            duration.add_histogram(&[("route_id", route_id), ("service", service)], &m.duration);
        }
        for (path, n) in PATHS.iter().zip(&m.paths) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                by_path.add(&[("route_id", route_id), ("path", path)], n as f64);
            }
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
        for (country, n) in m.geo_blocked.lock().iter() {
            geo.add(&[("route_id", route_id), ("country", country)], *n as f64);
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
    let mut version = Family::new(&CONFIG_VERSION);
    version.add(&[], live.version.load(Ordering::Acquire) as f64);
    let mut connected = Family::new(&CONTROL_PLANE_CONNECTED);
    connected.add(
        &[],
        f64::from(u8::from(live.registry.outbound.is_connected())),
    );
    let mut dropped = Family::new(&ACCESS_LOG_DROPPED_TOTAL);
    if let Some(log) = &live.access_log {
        dropped.add(&[], log.dropped() as f64);
    }
    let mut malformed = Family::new(&CLIENT_ADDRESS_MALFORMED_TOTAL);
    malformed.add(&[], live.malformed_client.load(Ordering::Relaxed) as f64);
    let mut page = String::with_capacity(capacity);
    render_into(
        vec![
            requests, by_path, duration, upstream, up, open, limited, version, connected, dropped,
            malformed, geo,
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

    /// The families of a scrape, by their `# TYPE` lines.
    fn families(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE portico_"))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    #[test]
    fn every_declared_family_is_what_a_busy_scrape_renders() {
        use portico_proto::settings::{BreakerSpec, RouteSettings};
        let live = Live {
            access_log: Some(
                crate::observe::access_log::AccessLog::start(
                    crate::observe::access_log::Target::Stdout,
                    1,
                )
                .unwrap(),
            ),
            ..Live::default()
        };
        let spec = portico_proto::RouteSpec {
            settings: RouteSettings {
                circuit_breaker: Some(BreakerSpec {
                    threshold: 3,
                    timeout: Duration::from_secs(5),
                    half_open_requests: 1,
                }),
                ..Default::default()
            },
            ..portico_proto::RouteSpec::for_test(
                "r1",
                "web",
                &["a.test"],
                "/",
                "http://127.0.0.1:9",
            )
        };
        let table =
            crate::config::table::RouteTable::compile(&[Arc::new(spec)], &live.registry).unwrap();
        live.table.store(Arc::new(table));
        let route = live.table.load().routes().next().unwrap().clone();
        route.runtime.metrics.request(
            200,
            Duration::from_millis(3),
            crate::observe::route_metrics::Path::Fast,
        );
        route
            .runtime
            .metrics
            .upstream_error(crate::observe::route_metrics::UpstreamError::Connect);
        route.runtime.metrics.rate_limited();
        route.runtime.metrics.geo_blocked("DE");
        let text = scrape(&live, 0);
        let declared: Vec<&str> = METRICS
            .iter()
            .map(|m| m.name.strip_prefix("portico_").unwrap())
            .collect();
        assert_eq!(families(&text), declared, "{text}");
    }
}
