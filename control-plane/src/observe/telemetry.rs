//! Telemetry from the data planes, merged for the services: per-route sums
//! with percentiles from the merged latency histograms (never averaged
//! percentiles), circuit-breaker states per data plane, health transitions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use portico_proto::settings::BreakerPhase;
use portico_proto::time::{from_unix_ms, rfc3339};
use portico_proto::{histogram, v1};
use serde_json::{json, Value};

use crate::config::global::SharedConfig;
use crate::observe::series::{self, Series};
use crate::protocol::RouteId;

#[derive(Default)]
struct Inner {
    routes: HashMap<String, v1::RouteStats>,
    /// node id -> its latest breaker states.
    breakers: HashMap<String, Vec<v1::BreakerState>>,
    /// (route, backend) -> last health reported to services.
    health: HashMap<(String, String), bool>,
    /// route -> (window start, requests in it, requests/s of the last window).
    rates: HashMap<String, (std::time::Instant, u64, f64)>,
    /// The last hour, for the dashboard's charts.
    series: Series,
}

/// The series step of this moment.
fn step_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    series::step_of(unix)
}

/// Merged reports, kept only for routes that are active: the committer says
/// which routes went, and a report about a route already gone (a data
/// plane's last one arrives after the removal) is dropped.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Mutex<Inner>>,
    config: SharedConfig,
}

fn from_ms(ms: i64) -> Option<String> {
    (ms > 0).then(|| rfc3339(from_unix_ms(ms)))
}

impl Telemetry {
    pub fn new(config: SharedConfig) -> Self {
        Telemetry {
            inner: Arc::default(),
            config,
        }
    }

    /// Merges one report; returns the health changes services should hear of
    /// (a transition several data planes report is told once).
    pub fn record(&self, node_id: &str, report: v1::Telemetry) -> Vec<v1::HealthChange> {
        let health_only = is_health_only(&report);
        let active = |id: &str| self.config.read().has_route(id);
        let mut inner = self.inner.lock();
        let breakers = report.breakers;
        let now = std::time::Instant::now();
        let step = step_now();
        for r in report.routes.into_iter().filter(|r| active(&r.route_id)) {
            inner.series.record(step, &r.route_id, &r);
            let rate = inner
                .rates
                .entry(r.route_id.clone())
                .or_insert((now, 0, 0.0));
            rate.1 += r.requests;
            let window = now.duration_since(rate.0).as_secs_f64();
            if window >= 1.0 {
                *rate = (now, 0, rate.1 as f64 / window);
            }
            let total = inner.routes.entry(r.route_id.clone()).or_default();
            portico_proto::stats::add(total, &r);
        }
        if !health_only {
            inner.breakers.insert(node_id.to_string(), breakers);
        }
        report
            .health
            .into_iter()
            .filter(|h| active(&h.route_id))
            .filter(|h| {
                inner
                    .health
                    .insert((h.route_id.clone(), h.backend_url.clone()), h.healthy)
                    != Some(h.healthy)
            })
            .collect()
    }

    /// A breaker changed state on `node_id`: its entry is replaced at once,
    /// without waiting for the next periodic report.
    pub fn breaker_changed(&self, node_id: &str, state: v1::BreakerState) {
        if !self.config.read().has_route(&state.route_id) {
            return;
        }
        let mut inner = self.inner.lock();
        let states = inner.breakers.entry(node_id.to_string()).or_default();
        match states
            .iter_mut()
            .find(|b| b.route_id == state.route_id && b.backend_url == state.backend_url)
        {
            Some(known) => *known = state,
            None => states.push(state),
        }
    }

    /// Routes that are no longer active: their sums and health go.
    pub fn forget_routes(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let gone: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut inner = self.inner.lock();
        inner.routes.retain(|id, _| !gone.contains(id.as_str()));
        inner.rates.retain(|id, _| !gone.contains(id.as_str()));
        for id in ids {
            inner.series.forget(id);
        }
        inner
            .health
            .retain(|(id, _), _| !gone.contains(id.as_str()));
    }

    /// Sizes of what it keeps, for `/debug/counts`.
    pub fn counts(&self) -> serde_json::Value {
        let inner = self.inner.lock();
        json!({
            "telemetry_routes": inner.routes.len(),
            "telemetry_health": inner.health.len(),
            "telemetry_breakers": inner.breakers.values().map(Vec::len).sum::<usize>(),
            "series_routes": inner.series.routes(),
        })
    }

    /// A route's last hour in 10 s points, as chart columns.
    pub fn route_series(&self, route_id: &str) -> Value {
        self.inner.lock().series.route(route_id, step_now())
    }

    /// The whole fleet's last hour.
    pub fn fleet_series(&self) -> Value {
        self.inner.lock().series.fleet(step_now())
    }

    /// Requests per second now, over every route, and for each route with
    /// traffic in the last 3 s its rate and its request and error totals:
    /// what the dashboard's stream sends.
    pub fn live_rates(&self) -> (f64, Vec<(String, f64, u64, u64)>) {
        let inner = self.inner.lock();
        let mut total = 0.0;
        let mut busy = Vec::new();
        for (id, (start, _, rate)) in &inner.rates {
            if start.elapsed().as_secs_f64() <= 3.0 && *rate > 0.0 {
                total += rate;
                let sums = inner.routes.get(id);
                busy.push((
                    id.clone(),
                    (rate * 10.0).round() / 10.0,
                    sums.map_or(0, |s| s.requests),
                    sums.map_or(0, |s| s.errors),
                ));
            }
        }
        busy.sort_by_key(|b| b.0.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()));
        (total, busy)
    }

    /// A data plane went away: its breakers no longer count.
    pub fn forget_node(&self, node_id: &str) {
        self.inner.lock().breakers.remove(node_id);
    }

    /// STATS_GET for one route, summed over every data plane.
    pub fn route_stats(&self, id: RouteId) -> Value {
        let inner = self.inner.lock();
        let empty = v1::RouteStats::default();
        let t = inner.routes.get(&id.to_string()).unwrap_or(&empty);
        let buckets: Vec<(usize, u64)> = t
            .latency_buckets
            .iter()
            .map(|(b, n)| (*b as usize, *n))
            .collect();
        let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
        let avg = if t.requests == 0 {
            0.0
        } else {
            t.latency_sum_ms / t.requests as f64
        };
        let codes: serde_json::Map<String, Value> = t
            .status_codes
            .iter()
            .map(|(c, n)| (c.to_string(), json!(n)))
            .collect();
        json!({
            "route_id": id.to_string(),
            "requests": t.requests,
            "errors": t.errors,
            "avg_latency_ms": round(avg),
            "p50_latency_ms": round(histogram::quantile(&buckets, 0.50)),
            "p95_latency_ms": round(histogram::quantile(&buckets, 0.95)),
            "p99_latency_ms": round(histogram::quantile(&buckets, 0.99)),
            "bytes_sent": t.bytes_sent,
            "bytes_received": t.bytes_received,
            "status_codes": codes,
        })
    }

    /// A route's live figures for the dashboard: STATS_GET's sums, the
    /// requests per second of the last reported second (0 once reports stop),
    /// whether every backend is healthy, and the worst breaker state.
    pub fn route_view(&self, id: RouteId) -> Value {
        let mut view = self.route_stats(id);
        let key = id.to_string();
        {
            let inner = self.inner.lock();
            let rate = inner.rates.get(&key).map_or(0.0, |(start, _, rate)| {
                if start.elapsed().as_secs_f64() > 3.0 {
                    0.0
                } else {
                    *rate
                }
            });
            view["requests_per_second"] = json!((rate * 10.0).round() / 10.0);
            let health: Vec<bool> = inner
                .health
                .iter()
                .filter(|((route, _), _)| *route == key)
                .map(|(_, up)| *up)
                .collect();
            view["healthy"] = json!(health.iter().all(|up| *up));
        }
        let mut breakers = self.breaker_status(id);
        view["breaker"] = breakers["state"].take();
        view["breakers"] = breakers["data_planes"].take();
        view
    }

    /// CIRCUIT_BREAKER_STATUS: the worst state over data planes and backends,
    /// and each data plane's own.
    pub fn breaker_status(&self, id: RouteId) -> Value {
        let id = id.to_string();
        let inner = self.inner.lock();
        let (mut state, mut failures, mut last_failure, mut next_attempt) =
            (BreakerPhase::Closed, 0, 0i64, 0i64);
        let mut planes = Vec::new();
        let mut nodes: Vec<&String> = inner.breakers.keys().collect();
        nodes.sort();
        for node in nodes {
            for b in inner.breakers[node].iter().filter(|b| b.route_id == id) {
                state = state.max(BreakerPhase::from_name(&b.state));
                failures = failures.max(b.failures);
                last_failure = last_failure.max(b.last_failure_unix_ms);
                if b.next_attempt_unix_ms > 0
                    && (next_attempt == 0 || b.next_attempt_unix_ms < next_attempt)
                {
                    next_attempt = b.next_attempt_unix_ms;
                }
                planes.push(json!({
                    "node_id": node,
                    "backend_url": b.backend_url,
                    "state": b.state,
                    "failures": b.failures,
                    "last_failure": from_ms(b.last_failure_unix_ms),
                    "next_attempt": from_ms(b.next_attempt_unix_ms),
                }));
            }
        }
        json!({
            "route_id": id,
            "state": state.as_str(),
            "failures": failures,
            "last_failure": from_ms(last_failure),
            "next_attempt": from_ms(next_attempt),
            "data_planes": planes,
        })
    }

    /// CIRCUIT_BREAKER_RESET: the route's breakers count as closed, on
    /// `node` (which confirmed its reset) or on every data plane.
    pub fn forget_breakers(&self, id: impl ToString, node: Option<&str>) {
        let id = id.to_string();
        for (n, states) in self.inner.lock().breakers.iter_mut() {
            if node.is_none_or(|node| node == n) {
                states.retain(|b| b.route_id != id);
            }
        }
    }
}

/// A health-only message, sent at once on a transition, carries no breaker
/// snapshot and must not clear the node's breaker states.
fn is_health_only(t: &v1::Telemetry) -> bool {
    t.routes.is_empty() && t.breakers.is_empty() && !t.health.is_empty()
}
