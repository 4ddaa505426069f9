//! The compiled route table: immutable, built from one configuration version,
//! swapped whole so a request sees one version. Host map (exact, then
//! wildcard suffixes) to entries ordered by priority, then prefix length.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use portico_proto::model::{match_prefix, prefix_matches};
use portico_proto::{BackendUrl, RouteSpec};

/// Pools under construction, keyed by (service, host, prefix).
type PoolBuilder = HashMap<(String, String, String), (i64, Vec<Arc<Backend>>)>;

/// One backend of a pool, with its address resolved when the table was built.
#[derive(Debug)]
pub struct Backend {
    pub route_id: String,
    pub url: BackendUrl,
    pub addr: Option<SocketAddr>,
}

/// The backends of one service for one host and path, balanced round-robin.
#[derive(Debug)]
pub struct Pool {
    pub service: String,
    pub backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn pick(&self) -> Option<&Arc<Backend>> {
        if self.backends.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.backends.get(i % self.backends.len())
    }
}

#[derive(Debug)]
struct Entry {
    prefix: String,
    priority: i64,
    pool: Arc<Pool>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<Entry>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Vec<Entry>>,
    /// The routes this table was built from, for the admin `/config` view.
    pub routes: Vec<Arc<RouteSpec>>,
}

impl RouteTable {
    /// Builds the table; backends are resolved once here, not per request.
    pub fn compile<'a>(routes: impl IntoIterator<Item = &'a Arc<RouteSpec>>) -> Self {
        let mut pools: PoolBuilder = HashMap::new();
        let mut resolved: HashMap<String, Option<SocketAddr>> = HashMap::new();
        let mut all = Vec::new();
        for route in routes {
            all.push(route.clone());
            let authority = route.backend.authority();
            let addr = *resolved
                .entry(authority.clone())
                .or_insert_with(|| authority.to_socket_addrs().ok().and_then(|mut a| a.next()));
            let backend = Arc::new(Backend {
                route_id: route.route_id.clone(),
                url: route.backend.clone(),
                addr,
            });
            let prefix = match_prefix(&route.path).to_string();
            for host in &route.domains {
                let key = (route.service.clone(), host.clone(), prefix.clone());
                let pool = pools.entry(key).or_insert((route.priority, Vec::new()));
                pool.0 = pool.0.max(route.priority);
                pool.1.push(backend.clone());
            }
        }
        let mut table = RouteTable {
            routes: all,
            ..Default::default()
        };
        for ((service, host, prefix), (priority, mut backends)) in pools {
            backends.sort_by(|a, b| a.route_id.cmp(&b.route_id));
            let entry = Entry {
                prefix,
                priority,
                pool: Arc::new(Pool {
                    service,
                    backends,
                    next: AtomicUsize::new(0),
                }),
            };
            match host.strip_prefix("*.") {
                Some(suffix) => table
                    .wildcard
                    .entry(suffix.to_string())
                    .or_default()
                    .push(entry),
                None => table.exact.entry(host).or_default().push(entry),
            }
        }
        for entries in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            entries.sort_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then(b.prefix.len().cmp(&a.prefix.len()))
                    .then(a.pool.service.cmp(&b.pool.service))
            });
        }
        table
    }

    pub fn len(&self) -> usize {
        self.routes.len()
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
        .find(|e| prefix_matches(&e.prefix, path))
        .map(|e| &e.pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        id: &str,
        service: &str,
        hosts: &[&str],
        path: &str,
        backend: &str,
        priority: i64,
    ) -> Arc<RouteSpec> {
        Arc::new(RouteSpec {
            route_id: id.into(),
            session_id: format!("s-{id}"),
            service: service.into(),
            instance: "i".into(),
            domains: hosts.iter().map(|h| h.to_string()).collect(),
            path: path.into(),
            backend: BackendUrl::parse(backend).unwrap(),
            priority,
            settings: Default::default(),
            drain: None,
            maintenance: None,
        })
    }

    fn served_by(table: &RouteTable, host: &str, path: &str) -> Option<String> {
        table.lookup(host, path).map(|p| {
            p.backends
                .iter()
                .map(|b| b.route_id.clone())
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    #[test]
    fn exact_over_wildcard_then_priority_then_longest_prefix() {
        let routes = [
            route(
                "r1",
                "a",
                &["*.example.com"],
                "/",
                "http://127.0.0.1:1",
                100,
            ),
            route(
                "r2",
                "a",
                &["api.example.com"],
                "/",
                "http://127.0.0.1:2",
                0,
            ),
            route(
                "r3",
                "a",
                &["api.example.com"],
                "/v1",
                "http://127.0.0.1:3",
                0,
            ),
            route(
                "r4",
                "a",
                &["api.example.com"],
                "/v1/admin",
                "http://127.0.0.1:4",
                0,
            ),
            route(
                "r5",
                "a",
                &["api.example.com"],
                "/low",
                "http://127.0.0.1:5",
                5,
            ),
        ];
        let t = RouteTable::compile(&routes);
        assert_eq!(
            served_by(&t, "api.example.com", "/v1/users").as_deref(),
            Some("r3")
        );
        assert_eq!(
            served_by(&t, "api.example.com", "/v1/admin/x").as_deref(),
            Some("r4")
        );
        assert_eq!(
            served_by(&t, "api.example.com", "/v1x").as_deref(),
            Some("r2")
        );
        assert_eq!(
            served_by(&t, "api.example.com", "/low/a").as_deref(),
            Some("r5")
        );
        assert_eq!(served_by(&t, "www.example.com", "/").as_deref(), Some("r1"));
        assert_eq!(served_by(&t, "a.b.example.com", "/").as_deref(), Some("r1"));
        assert_eq!(served_by(&t, "example.com", "/"), None);
        assert_eq!(served_by(&t, "other.org", "/"), None);
    }

    #[test]
    fn instances_of_a_service_share_a_pool_round_robin() {
        let routes = [
            route("r1", "web", &["a.com"], "/", "http://127.0.0.1:1", 0),
            route("r2", "web", &["a.com"], "/", "http://127.0.0.1:2", 0),
        ];
        let t = RouteTable::compile(&routes);
        let pool = t.lookup("a.com", "/x").unwrap();
        let picks: Vec<u16> = (0..4).map(|_| pool.pick().unwrap().url.port).collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
        assert_eq!(pool.backends[0].addr, Some("127.0.0.1:1".parse().unwrap()));
    }
}
