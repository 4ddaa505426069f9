//! Backend names are looked up in the background, never on the request
//! path: each name every `--dns-refresh` (sooner when its TTL is shorter,
//! never more often than once a second), through hickory's resolver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use portico_proto::backend_policy::{not_allowed, BackendPolicy};
use portico_proto::{v1, BackendUrl};
use tracing::{debug, info, warn};

use crate::backends::names::{Change, Name, Names};

/// A TTL shorter than this is looked up again only after it.
const MIN_TTL: Duration = Duration::from_secs(1);
/// How long a push waits for its new names before it is acknowledged.
const FIRST_LOOKUP_LIMIT: Duration = Duration::from_secs(1);
/// The system's resolver configuration, re-read when it changes.
const SYSTEM_FILES: [&str; 2] = ["/etc/hosts", "/etc/resolv.conf"];

#[derive(Debug, Clone)]
pub struct Settings {
    /// A DNS server to ask instead of the system's configuration.
    pub server: Option<SocketAddr>,
    pub refresh: Duration,
    /// How long the last good addresses of a name that stops resolving stay.
    pub stale_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            refresh: Duration::from_secs(5),
            stale_grace: Duration::from_secs(300),
        }
    }
}

/// The resolver and what it was built from: with the system configuration,
/// the modification times of its files, so an edit is picked up.
type Built = (Vec<Option<SystemTime>>, TokioResolver);

#[derive(Default)]
pub struct Dns {
    pub settings: Settings,
    resolver: Mutex<Option<Built>>,
    /// Addresses a name may resolve to (the control plane sends it).
    policy: ArcSwap<BackendPolicy>,
}

impl Dns {
    pub fn new(settings: Settings) -> Self {
        Dns {
            settings,
            ..Dns::default()
        }
    }

    pub fn set_policy(&self, policy: BackendPolicy) {
        self.policy.store(Arc::new(policy));
    }

    fn resolver(&self) -> Result<TokioResolver, String> {
        let stamp: Vec<Option<SystemTime>> = match self.settings.server {
            Some(_) => Vec::new(),
            None => SYSTEM_FILES
                .iter()
                .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
                .collect(),
        };
        let mut slot = self.resolver.lock();
        if let Some((built_from, resolver)) = &*slot {
            if *built_from == stamp {
                return Ok(resolver.clone());
            }
        }
        let resolver = self.build()?;
        if slot.is_some() {
            info!("the system's resolver configuration changed; re-read it");
        }
        *slot = Some((stamp, resolver.clone()));
        Ok(resolver)
    }

    fn build(&self) -> Result<TokioResolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match self.settings.server {
            Some(server) => {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = server.port();
                        c
                    })
                    .collect();
                let ns = NameServerConfig::new(server.ip(), true, connections);
                let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
                TokioResolver::builder_with_config(config, provider)
                    .with_options(ResolverOpts::default())
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("reading the system's resolver configuration: {e}"))?,
        };
        // Answers are kept no longer than the refresh, so each refresh asks
        // the server; a refused name is asked again after a second.
        let opts = builder.options_mut();
        opts.positive_max_ttl = Some(self.settings.refresh);
        opts.negative_max_ttl = Some(MIN_TTL);
        // IPv6 only for names without IPv4, as getaddrinfo's first answer
        // would be: a backend on 127.0.0.1 is not also tried on ::1.
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        builder
            .build()
            .map_err(|e| format!("building the resolver: {e}"))
    }

    /// The addresses of `host` the policy allows, and how long they may be
    /// kept; an answer of denied addresses only is an error naming one.
    pub async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        let (ips, ttl) = self.lookup_any(host).await?;
        let policy = self.policy.load();
        let (allowed, denied): (Vec<IpAddr>, Vec<IpAddr>) =
            ips.into_iter().partition(|ip| policy.allows(*ip));
        if let Some(first) = denied.first() {
            debug!(name = %host, denied = ?denied, "backend name resolves to denied addresses; they are not used");
            if allowed.is_empty() {
                return Err(format!("{host}: {}", not_allowed(*first)));
            }
        }
        Ok((allowed, ttl))
    }

    async fn lookup_any(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        let resolver = self.resolver()?;
        let found = resolver.lookup_ip(host).await.map_err(|e| {
            if e.is_nx_domain() {
                format!("{host}: no such name")
            } else if e.is_no_records_found() {
                format!("{host}: no address records")
            } else {
                format!("{host}: {e}")
            }
        })?;
        let ips: Vec<IpAddr> = found.iter().collect();
        if ips.is_empty() {
            return Err(format!("{host}: no address records"));
        }
        Ok((
            ips,
            found
                .valid_until()
                .saturating_duration_since(Instant::now()),
        ))
    }

    /// Where `url` is reached now: its address, or its name's first.
    pub async fn lookup_one(&self, url: &BackendUrl) -> Result<SocketAddr, String> {
        if let Ok(ip) = url.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, url.port));
        }
        let (ips, _) = self.lookup(&url.host).await?;
        Ok(SocketAddr::new(ips[0], url.port))
    }

    /// Looks `name` up once and keeps the answer (or the failure).
    pub async fn refresh(&self, name: &Name) {
        let before = name.current();
        let change = match self.lookup(&name.host).await {
            Ok((ips, ttl)) => name.succeeded(ips, ttl.max(MIN_TTL).min(self.settings.refresh)),
            Err(e) => name.failed(e, self.settings.stale_grace, self.settings.refresh),
        };
        let now = name.current();
        let host = &name.host;
        let addrs = || format!("{:?}", now.addrs);
        match change {
            Change::Same => {}
            Change::Moved => info!(name = %host, addrs = %addrs(), "backend name resolved"),
            Change::KeptStale if before.error.is_none() => {
                warn!(name = %host, error = now.error.as_deref().unwrap_or(""), grace = ?self.settings.stale_grace, addrs = %addrs(), "backend name stopped resolving; serving its last addresses")
            }
            Change::StillFailing if before.error.is_none() => {
                warn!(name = %host, error = now.error.as_deref().unwrap_or(""), "backend name does not resolve")
            }
            Change::Dropped => {
                warn!(name = %host, error = now.error.as_deref().unwrap_or(""), "backend name has not resolved for the whole grace; its addresses are dropped")
            }
            Change::KeptStale | Change::StillFailing => {
                debug!(name = %host, error = now.error.as_deref().unwrap_or(""), "backend name still does not resolve")
            }
        }
    }

    /// Looks up, before a push is acknowledged, the names it brings that
    /// were never looked up, so `OK` finds them served; bounded in time (a
    /// name still unanswered is left to the refresher). The returned names
    /// keep them alive until the push's table holds them.
    pub async fn prepare(&self, names: &Names, push: &v1::ConfigPush) -> Vec<Arc<Name>> {
        let routes: &[v1::Route] = match &push.body {
            Some(v1::config_push::Body::Snapshot(s)) => &s.routes,
            Some(v1::config_push::Body::Delta(d)) => &d.upserted,
            None => &[],
        };
        let urls = routes.iter().flat_map(|r| {
            let maintenance = r.maintenance.as_ref().map(|m| m.backend_url.as_str());
            std::iter::once(r.backend_url.as_str()).chain(maintenance)
        });
        let mut held: Vec<Arc<Name>> = Vec::new();
        for url in urls.filter_map(|u| BackendUrl::parse(u).ok()) {
            let name = names.get(&url);
            if name.pending() && !held.iter().any(|h| Arc::ptr_eq(h, &name)) {
                held.push(name);
            }
        }
        if !held.is_empty() {
            let lookups = futures::future::join_all(held.iter().map(|n| self.refresh(n)));
            if tokio::time::timeout(FIRST_LOOKUP_LIMIT, lookups)
                .await
                .is_err()
            {
                warn!(names = held.len(), limit = ?FIRST_LOOKUP_LIMIT, "new backend names not resolved in time; acknowledging, they are served once they resolve");
            }
        }
        held
    }
}
