//! The compiled route table: immutable, built from one configuration version,
//! swapped whole so a request sees one version. Host map (exact, then
//! wildcard suffixes) to pools ordered by priority, then prefix length.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use portico_proto::model::{match_prefix, prefix_matches};
use portico_proto::settings::Drain;
use portico_proto::{BackendUrl, RouteSpec};

use crate::backends::names::Name;
use crate::backends::runtime::{Availability, BackendRuntime, Registry, RouteRuntime};
use crate::config::policy::{Policy, PolicyError};
use crate::filters::{self, RouteParts};
use crate::pipeline::chain::Chain;

/// Where maintenance traffic of a route goes; `None` is the built-in page.
#[derive(Debug, Clone)]
pub struct MaintenanceTarget {
    pub url: BackendUrl,
    pub name: Arc<Name>,
}

/// A route whose settings this data plane cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route_id}: {source}")]
pub struct CompileError {
    pub route_id: String,
    pub source: PolicyError,
}

/// One route as the proxy serves it: its backend, settings and runtime state.
pub struct RouteEntry {
    pub spec: Arc<RouteSpec>,
    /// The backend url as text, for metric labels (made once per table).
    pub backend_url: Box<str>,
    pub policy: Policy,
    pub drain: Option<Drain>,
    pub maintenance: Option<Option<MaintenanceTarget>>,
    pub runtime: Arc<RouteRuntime>,
    pub backend: Arc<BackendRuntime>,
    /// The filters a request to this route passes, built from its settings.
    pub chain: Chain,
}

impl RouteEntry {
    /// Weight out of 1000: full, or ramping down to 0 over a drain.
    pub fn weight(&self, now: SystemTime) -> i64 {
        let Some(d) = self.drain else { return 1000 };
        (1000.0 * d.weight_at(now)) as i64
    }
}

/// The routes of one service for one host and path, balanced by smooth
/// weighted round-robin (weights change per request during drains).
pub struct Pool {
    pub entries: Vec<Arc<RouteEntry>>,
    /// The filters run before a route of the pool is chosen.
    pub chain: Chain,
    /// No route of the pool compresses or speaks HTTP/2 to its backend, so
    /// its requests can take the forwarding fast path.
    pub fast: bool,
    current: Mutex<Vec<i64>>,
}

/// What a request to a pool gets.
pub enum Choice {
    Route(Arc<RouteEntry>),
    /// Every eligible route is in maintenance.
    Maintenance(Arc<RouteEntry>),
    Unavailable(&'static str),
}

impl Pool {
    /// Chooses a route among those not excluded, not in maintenance, healthy
    /// and with their breaker letting requests through, by drain weight. When
    /// every one of them has drained to zero they share equally: draining
    /// backends keep serving rather than fail.
    pub fn choose(&self, now: SystemTime, exclude: &[String]) -> Choice {
        // Most pools hold one route: the same rules, without the weights.
        // A route whose name has no addresses is chosen only when nothing
        // else can serve: its request then fails as unresolved (502).
        if let [e] = self.entries.as_slice() {
            if exclude.contains(&e.spec.route_id) {
                return Choice::Unavailable("no backend available");
            } else if e.maintenance.is_some() {
                return Choice::Maintenance(e.clone());
            }
            return match e.backend.availability(e.policy.breaker.as_ref(), now) {
                Availability::Ready | Availability::Unresolved => Choice::Route(e.clone()),
                Availability::Unhealthy => Choice::Unavailable("every backend is unhealthy"),
                Availability::BreakerOpen => Choice::Unavailable("circuit breaker open"),
            };
        }
        let mut weights = vec![0i64; self.entries.len()];
        let (mut maintenance, mut unresolved, mut unhealthy, mut open, mut eligible) =
            (None, None, false, false, 0);
        for (i, e) in self.entries.iter().enumerate() {
            if exclude.contains(&e.spec.route_id) {
                continue;
            }
            if e.maintenance.is_some() {
                maintenance.get_or_insert_with(|| e.clone());
                continue;
            }
            match e.backend.availability(e.policy.breaker.as_ref(), now) {
                Availability::Ready => {
                    eligible += 1;
                    weights[i] = e.weight(now).max(0) + 1;
                }
                Availability::Unresolved => {
                    unresolved.get_or_insert_with(|| e.clone());
                }
                Availability::Unhealthy => unhealthy = true,
                Availability::BreakerOpen => open = true,
            }
        }
        if eligible == 0 {
            return match (maintenance, unresolved) {
                (Some(e), _) => Choice::Maintenance(e),
                (None, Some(e)) => Choice::Route(e),
                _ if open => Choice::Unavailable("circuit breaker open"),
                _ if unhealthy => Choice::Unavailable("every backend is unhealthy"),
                _ => Choice::Unavailable("no backend available"),
            };
        }
        // Weight 1 marks an eligible backend drained to zero: it only takes
        // traffic when nothing with real weight is left.
        if weights.iter().any(|w| *w > 1) {
            for w in weights.iter_mut() {
                if *w == 1 {
                    *w = 0;
                }
            }
        }
        let total: i64 = weights.iter().sum();
        let mut current = self.current.lock();
        current.resize(weights.len(), 0);
        let mut best = None;
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            current[i] += w;
            if best.is_none_or(|b: usize| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best.expect("an eligible backend has weight");
        current[best] -= total;
        Choice::Route(self.entries[best].clone())
    }
}

/// (service, path prefix): the routes of one host that share a pool.
type PoolKey<'a> = (&'a str, &'a str);

struct Entry {
    /// The matched prefix is this long a start of the members' path; kept as
    /// a length so an entry needs no string of its own.
    prefix_len: usize,
    priority: i64,
    pool: Arc<Pool>,
}

impl Entry {
    fn prefix(&self) -> &str {
        // The common empty prefix ("/") needs no look at the route.
        match self.prefix_len {
            0 => "",
            n => &self.pool.entries[0].spec.path[..n],
        }
    }
}

/// Host (or wildcard suffix) -> its entries. foldhash hashes a host in a
/// few nanoseconds, SipHash in tens; its seed is random per process, and
/// clients only look keys up, they never add any.
type HostMap = HashMap<Arc<str>, Arc<[Entry]>, foldhash::fast::RandomState>;

/// Immutable once built; a push makes a new table that shares everything a
/// delta does not touch (maps of `Arc`s are cheap to copy).
#[derive(Default, Clone)]
pub struct RouteTable {
    exact: HostMap,
    /// Keyed by the suffix after `*.`.
    wildcard: HostMap,
    len: usize,
}

fn compile_entry(spec: &Arc<RouteSpec>, registry: &Registry) -> Result<RouteEntry, CompileError> {
    let policy = Policy::new(&spec.settings).map_err(|source| CompileError {
        route_id: spec.route_id.clone(),
        source,
    })?;
    let (runtime, backend) = registry.route(&spec.route_id, &spec.backend);
    let maintenance = spec.maintenance.as_ref().map(|m| {
        m.backend.as_ref().map(|url| MaintenanceTarget {
            url: url.clone(),
            name: registry.names.get(url),
        })
    });
    let chain = filters::route_chain(RouteParts {
        spec,
        policy: &policy,
        maintenance: maintenance.as_ref().map(Option::is_some),
        runtime: &runtime,
        backend: &backend,
        outbound: &registry.outbound,
        geoip: registry.geoip.as_ref(),
    });
    Ok(RouteEntry {
        backend_url: spec.backend.to_string().into(),
        policy,
        drain: spec.drain,
        maintenance,
        runtime,
        backend,
        chain,
        spec: spec.clone(),
    })
}

/// The entries of one host: its routes grouped into pools by service and
/// path prefix, ordered by priority, then prefix length.
fn host_entries(routes: &[Arc<RouteEntry>]) -> Arc<[Entry]> {
    let mut pools: HashMap<PoolKey, (i64, Vec<Arc<RouteEntry>>)> = HashMap::new();
    for route in routes {
        let spec = &route.spec;
        let pool = pools
            .entry((spec.service.as_str(), match_prefix(&spec.path)))
            .or_insert((spec.priority, Vec::new()));
        pool.0 = pool.0.max(spec.priority);
        pool.1.push(route.clone());
    }
    let mut entries: Vec<Entry> = pools
        .into_iter()
        .map(|((_, prefix), (priority, mut members))| {
            members.sort_by(|a, b| a.spec.route_id.cmp(&b.spec.route_id));
            Entry {
                prefix_len: prefix.len(),
                priority,
                pool: Arc::new(Pool {
                    chain: filters::pool_chain(members.iter().map(|m| &m.policy)),
                    fast: members
                        .iter()
                        .all(|m| !m.policy.compression && !m.policy.http2),
                    entries: members,
                    current: Mutex::new(Vec::new()),
                }),
            }
        })
        .collect();
    entries.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.prefix_len.cmp(&a.prefix_len))
            .then(
                a.pool.entries[0]
                    .spec
                    .service
                    .cmp(&b.pool.entries[0].spec.service),
            )
    });
    entries.into()
}

impl RouteTable {
    /// Builds a table from scratch.
    pub fn compile<'a>(
        routes: impl IntoIterator<Item = &'a Arc<RouteSpec>>,
        registry: &Registry,
    ) -> Result<Self, CompileError> {
        let upserted: Vec<&Arc<RouteSpec>> = routes.into_iter().collect();
        RouteTable::default().with_changes(&upserted, &[], registry)
    }

    /// A new table with `upserted` routes compiled in and `replaced` ones
    /// (as this table has them: removed, or older versions of upserted ones)
    /// gone. Only the hosts they name are rebuilt; everything else is shared
    /// with this table. Backend names are resolved in the background (`dns`).
    pub fn with_changes(
        &self,
        upserted: &[&Arc<RouteSpec>],
        replaced: &[&RouteSpec],
        registry: &Registry,
    ) -> Result<Self, CompileError> {
        let compiled = upserted
            .iter()
            .map(|spec| compile_entry(spec, registry).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut next = self.clone();
        next.len = (self.len + compiled.len()).saturating_sub(replaced.len());
        // Hosts whose routes change: those of the old and the new versions.
        let mut gone: HashSet<&str> = replaced.iter().map(|s| s.route_id.as_str()).collect();
        gone.extend(upserted.iter().map(|s| s.route_id.as_str()));
        let touched: HashSet<Arc<str>> = replaced
            .iter()
            .map(|s| &s.domains)
            .chain(compiled.iter().map(|r| &r.spec.domains))
            .flatten()
            .map(|d| Arc::<str>::from(d.as_str()))
            .collect();
        for host in touched {
            let (map, key): (&mut HostMap, Arc<str>) = match host.strip_prefix("*.") {
                Some(suffix) => (&mut next.wildcard, Arc::from(suffix)),
                None => (&mut next.exact, host.clone()),
            };
            // The host's routes are those in its pools, less the changed ones.
            let mut members: Vec<Arc<RouteEntry>> = map
                .get(&key)
                .into_iter()
                .flat_map(|entries| entries.iter())
                .flat_map(|e| e.pool.entries.iter())
                .filter(|r| !gone.contains(r.spec.route_id.as_str()))
                .cloned()
                .collect();
            members.extend(
                compiled
                    .iter()
                    .filter(|r| r.spec.domains.iter().any(|d| **d == *host))
                    .cloned(),
            );
            if members.is_empty() {
                map.remove(&key);
            } else {
                map.insert(key, host_entries(&members));
            }
        }
        Ok(next)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every route once (a route with several domains sits in several hosts;
    /// it is listed from its first), for the admin view and the prober.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<RouteEntry>> {
        let exact = self.exact.iter().map(|(host, e)| (host.as_ref(), "", e));
        let wildcard = self
            .wildcard
            .iter()
            .map(|(host, e)| (host.as_ref(), "*.", e));
        exact.chain(wildcard).flat_map(|(host, star, entries)| {
            entries
                .iter()
                .flat_map(|e| e.pool.entries.iter())
                .filter(move |r| {
                    r.spec
                        .domains
                        .first()
                        .is_some_and(|d| d.strip_prefix(star).is_some_and(|rest| rest == host))
                })
        })
    }

    /// The pool serving `host` (lower case, no port) and `path`: exact hosts
    /// first, then wildcards from the longest suffix.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Pool>> {
        if let Some(pool) = self.exact.get(host).and_then(|e| first_match(e, path)) {
            return Some(pool);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(pool) = self.wildcard.get(rest).and_then(|e| first_match(e, path)) {
                return Some(pool);
            }
        }
        None
    }
}

fn first_match<'a>(entries: &'a [Entry], path: &str) -> Option<&'a Arc<Pool>> {
    entries
        .iter()
        .find(|e| prefix_matches(e.prefix(), path))
        .map(|e| &e.pool)
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
