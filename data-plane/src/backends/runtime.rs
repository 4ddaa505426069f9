//! Runtime state kept outside the configuration snapshot, keyed by stable
//! ids so it survives table swaps: per-route statistics and rate limiter,
//! per-address health and circuit breaker of each route's backend.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pingora_limits::rate::Rate;
use portico_proto::{v1, BackendUrl};

use crate::backends::breaker::{Breaker, BreakerSpec, State};
use crate::backends::names::Name;
use crate::backends::names::Names;

/// A fixed-window limit per client IP. The estimator (a count-min sketch)
/// has bounded memory whatever the number of clients, and never undercounts.
pub struct Limiter {
    pub requests: u64,
    pub window: Duration,
    rate: Rate,
    started: Instant,
}

impl Limiter {
    fn new(requests: u64, window: Duration) -> Self {
        Limiter {
            requests,
            window,
            started: Instant::now(),
            rate: Rate::new(window),
        }
    }

    /// Counts a request; `Err(retry_after_secs)` when it is over the limit.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        let seen = self.rate.observe(&client, 1);
        if seen as u64 <= self.requests {
            return Ok(());
        }
        let window_ms = self.window.as_millis().max(1);
        let into = self.started.elapsed().as_millis() % window_ms;
        Err(((window_ms - into) as u64).div_ceil(1000).max(1))
    }
}

#[derive(Default)]
pub struct RouteRuntime {
    /// Counters since the last telemetry report; boxed on the first
    /// request so idle routes stay small.
    counters: Mutex<Option<Box<crate::observe::route_window::Window>>>,
    limiter: Mutex<Option<Arc<Limiter>>>,
    /// Totals since start, for `/metrics`.
    pub metrics: crate::observe::route_metrics::RouteMetrics,
}

impl RouteRuntime {
    pub fn record(&self, status: Option<u16>, latency_ms: f64, sent: u64, received: u64) {
        self.counters
            .lock()
            .get_or_insert_with(Default::default)
            .record(status, latency_ms, sent, received);
    }

    /// A request refused by the route's geo rules, for `/metrics` and the
    /// next report (the owning session's `geo_blocked` event).
    pub fn geo_blocked(&self, country: &str) {
        self.metrics.geo_blocked(country);
        self.counters
            .lock()
            .get_or_insert_with(Default::default)
            .geo_blocked(country);
    }

    /// The limiter for this spec, kept while the spec stays the same.
    pub fn limiter(&self, requests: u64, window: Duration) -> Arc<Limiter> {
        let mut slot = self.limiter.lock();
        match &*slot {
            Some(l) if l.requests == requests && l.window == window => l.clone(),
            _ => {
                let l = Arc::new(Limiter::new(requests, window));
                *slot = Some(l.clone());
                l
            }
        }
    }

    /// Takes the counters since the last call, if there was traffic.
    fn take(&self, route_id: &str) -> Option<v1::RouteStats> {
        self.counters.lock().as_mut()?.take(route_id)
    }
}

/// Health and breaker of one address of a route's backend.
pub struct Endpoint {
    pub addr: SocketAddr,
    healthy: AtomicBool,
    pub breaker: Mutex<Breaker>,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            healthy: AtomicBool::new(true),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Sets health; true when it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }

    pub fn breaker_allows(&self, spec: Option<&BreakerSpec>, now: SystemTime) -> bool {
        spec.is_none_or(|s| self.breaker.lock().allows(s, now))
    }
}

/// A backend's endpoints at one set of its name's addresses.
#[derive(Default)]
pub struct Endpoints {
    generation: u64,
    pub list: Box<[Arc<Endpoint>]>,
}

/// Whether a route's backend can take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Its name has no addresses (not yet, or no longer).
    Unresolved,
    Unhealthy,
    BreakerOpen,
}

/// One route's backend: an endpoint per address its name resolves to, each
/// with its own health and breaker, following the name as it changes.
pub struct BackendRuntime {
    pub name: Arc<Name>,
    endpoints: ArcSwap<Endpoints>,
    rebuild: Mutex<()>,
    next: AtomicUsize,
    /// The route's health as last reported to the control plane.
    reported: AtomicBool,
}

impl BackendRuntime {
    fn new(name: Arc<Name>) -> Self {
        BackendRuntime {
            name,
            endpoints: ArcSwap::default(),
            rebuild: Mutex::new(()),
            next: AtomicUsize::new(0),
            reported: AtomicBool::new(true),
        }
    }

    /// The endpoints at the name's current addresses; the state of an
    /// address that stays is kept across changes.
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<Endpoints>> {
        let resolved = self.name.current();
        let current = self.endpoints.load();
        if current.generation == resolved.generation {
            return current;
        }
        drop(current);
        let _one_at_a_time = self.rebuild.lock();
        let old = self.endpoints.load_full();
        if old.generation != resolved.generation {
            let list = resolved
                .addrs
                .iter()
                .map(|addr| match old.list.iter().find(|e| e.addr == *addr) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(Endpoint::new(*addr)),
                })
                .collect();
            self.endpoints.store(Arc::new(Endpoints {
                generation: resolved.generation,
                list,
            }));
        }
        self.endpoints.load()
    }

    pub fn availability(&self, spec: Option<&BreakerSpec>, now: SystemTime) -> Availability {
        let endpoints = self.endpoints();
        if endpoints.list.is_empty() {
            return Availability::Unresolved;
        }
        let mut healthy = false;
        for e in endpoints.list.iter().filter(|e| e.healthy()) {
            if e.breaker_allows(spec, now) {
                return Availability::Ready;
            }
            healthy = true;
        }
        if healthy {
            Availability::BreakerOpen
        } else {
            Availability::Unhealthy
        }
    }

    /// The next healthy endpoint whose breaker lets a request through,
    /// round-robin over the addresses.
    pub fn pick(&self, spec: Option<&BreakerSpec>, now: SystemTime) -> Option<Arc<Endpoint>> {
        let endpoints = self.endpoints();
        let list = &endpoints.list;
        let start = match list.len() {
            0 => return None,
            1 => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed),
        };
        (0..list.len())
            .map(|i| &list[(start + i) % list.len()])
            .find(|e| e.healthy() && e.breaker_allows(spec, now))
            .cloned()
    }

    /// Records the route's health as reported; true when it changed.
    pub fn report_healthy(&self, healthy: bool) -> bool {
        self.reported.swap(healthy, Ordering::AcqRel) != healthy
    }

    /// The breaker as the control plane sees it: the worst of the addresses'.
    pub fn breaker_wire(&self, route_id: &str, url: &str) -> v1::BreakerState {
        let endpoints = self.endpoints();
        let worst = endpoints
            .list
            .iter()
            .map(|e| e.breaker.lock().clone())
            .max_by_key(|b| (b.phase(), b.failures));
        worst.unwrap_or_default().to_wire(route_id, url)
    }

    /// Any address's breaker open.
    pub fn breaker_open(&self) -> bool {
        self.endpoints()
            .list
            .iter()
            .any(|e| matches!(e.breaker.lock().state, State::Open { .. }))
    }

    fn breaker_seen(&self) -> bool {
        self.endpoints.load().list.iter().any(|e| {
            let b = e.breaker.lock();
            b.last_failure.is_some() || b.state != State::Closed
        })
    }

    fn reset_breakers(&self) {
        for e in self.endpoints.load().list.iter() {
            e.breaker.lock().reset();
        }
    }
}

/// Runtime state of one route id: its counters and limiter, and the health
/// and breaker of each backend url it has had (one, except while a change
/// of url is being applied).
#[derive(Default)]
struct Slot {
    route: Arc<RouteRuntime>,
    backends: Vec<(Box<str>, Arc<BackendRuntime>)>,
}

/// Every runtime object, by route id. The table holds `Arc`s to them;
/// `retain` and `forget` drop those of routes and backends that are gone.
#[derive(Default)]
pub struct Registry {
    routes: Mutex<HashMap<String, Slot>>,
    /// The backends' names and their addresses.
    pub names: Names,
    /// The stream to the control plane, for what is sent besides ACKs
    /// (breaker changes from the request path, probes, telemetry).
    pub outbound: crate::config::outbound::Outbound,
    /// `--geoip-db`, for the routes that filter by country.
    pub geoip: Option<Arc<crate::config::geoip::GeoDb>>,
}

impl Registry {
    /// A registry whose routes filter by country with `geoip`.
    pub fn with_geoip(geoip: Option<Arc<crate::config::geoip::GeoDb>>) -> Registry {
        Registry {
            geoip,
            ..Default::default()
        }
    }

    /// The route's runtime and that of its backend at `url`.
    pub fn route(
        &self,
        route_id: &str,
        backend: &BackendUrl,
    ) -> (Arc<RouteRuntime>, Arc<BackendRuntime>) {
        let url = backend.to_string();
        let url = url.as_str();
        let mut routes = self.routes.lock();
        let slot = match routes.get_mut(route_id) {
            Some(slot) => slot,
            None => routes.entry(route_id.to_string()).or_default(),
        };
        let backend = match slot.backends.iter().find(|(u, _)| &**u == url) {
            Some((_, b)) => b.clone(),
            None => {
                let b = Arc::new(BackendRuntime::new(self.names.get(backend)));
                slot.backends.push((url.into(), b.clone()));
                b
            }
        };
        (slot.route.clone(), backend)
    }

    /// Forgets state of routes and backends no longer configured. Stats of
    /// a removed route are reported once more before they go.
    pub fn retain(&self, live: &HashMap<&str, String>) -> Vec<v1::RouteStats> {
        let mut gone = Vec::new();
        self.routes.lock().retain(|id, slot| {
            let Some(url) = live.get(id.as_str()) else {
                gone.extend(slot.route.take(id));
                return false;
            };
            slot.backends.retain(|(u, _)| **u == **url);
            true
        });
        gone
    }

    /// Forgets one backend of a route (its url changed, or the route went),
    /// and with `route_gone` the route's own state; returns its last stats.
    pub fn forget(&self, route_id: &str, url: &str, route_gone: bool) -> Option<v1::RouteStats> {
        let mut routes = self.routes.lock();
        if route_gone {
            let slot = routes.remove(route_id)?;
            return slot.route.take(route_id);
        }
        if let Some(slot) = routes.get_mut(route_id) {
            slot.backends.retain(|(u, _)| &**u != url);
        }
        None
    }

    /// Counters since the last report, for every route with traffic.
    pub fn take_stats(&self) -> Vec<v1::RouteStats> {
        let routes: Vec<(String, Arc<RouteRuntime>)> = self
            .routes
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.route.clone()))
            .collect();
        routes.iter().filter_map(|(id, rt)| rt.take(id)).collect()
    }

    /// The state of every breaker that has seen a failure.
    pub fn breakers(&self) -> Vec<v1::BreakerState> {
        let routes = self.routes.lock();
        routes
            .iter()
            .flat_map(|(id, slot)| slot.backends.iter().map(move |(url, b)| (id, url, b)))
            .filter(|(_, _, b)| b.breaker_seen())
            .map(|(id, url, b)| b.breaker_wire(id, url))
            .collect()
    }

    /// (route ids, route backends, routes with counters, routes with a
    /// limiter), for `/debug/counts`.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let routes = self.routes.lock();
        let backends = routes.values().map(|s| s.backends.len()).sum();
        let counters = routes
            .values()
            .filter(|s| s.route.counters.lock().is_some())
            .count();
        let limiters = routes
            .values()
            .filter(|s| s.route.limiter.lock().is_some())
            .count();
        (routes.len(), backends, counters, limiters)
    }

    pub fn reset_breakers(&self, route_id: &str) {
        if let Some(slot) = self.routes.lock().get(route_id) {
            for (_, b) in &slot.backends {
                b.reset_breakers();
            }
        }
    }
}
