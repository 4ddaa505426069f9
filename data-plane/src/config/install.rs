//! Installing a push: the sync task's copy of the checked routes at the
//! applied version, from which it compiles the table the proxy reads. A push
//! is validated and compiled before anything is swapped, so a bad push
//! changes nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use portico_proto::route::RouteError;
use portico_proto::v1::{self, config_push::Body};
use portico_proto::RouteSpec;

use crate::config::live::Live;
use crate::config::table::RouteTable;
use crate::edge::certs::{CertPushError, CertStore, Served};

/// Why a push was refused; sent back to the control plane in the NACK.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("version {got} is older than the applied version {applied}")]
    Backwards { got: u64, applied: u64 },
    #[error("delta on top of version {base}, but version {applied} is applied")]
    BaseMismatch { base: u64, applied: u64 },
    #[error("push without a body")]
    Empty,
    #[error(transparent)]
    Invalid(#[from] RouteError),
    #[error(transparent)]
    Compile(#[from] crate::config::table::CompileError),
    #[error("{count} routes is more than this data plane's limit of {max} (--max-routes)")]
    TooMany { count: usize, max: usize },
    #[error(transparent)]
    Cert(#[from] CertPushError),
}

/// The sync task's own copy of the routes; only it writes `Live`.
pub struct ConfigState {
    routes: HashMap<String, Arc<RouteSpec>>,
    certs: HashMap<String, Arc<Served>>,
    challenges: HashMap<String, String>,
    applied: Option<u64>,
    /// Refuse configurations with more routes (0: no limit).
    max_routes: usize,
    /// `--default-cert`: the host whose certificate answers unknown names.
    default_cert: Option<String>,
    pub live: Arc<Live>,
}

/// The certificates and challenges a push leaves, when it changes them.
type TlsState = (HashMap<String, Arc<Served>>, HashMap<String, String>);

impl ConfigState {
    pub fn new(live: Arc<Live>, max_routes: usize) -> Self {
        ConfigState {
            routes: HashMap::new(),
            certs: HashMap::new(),
            challenges: HashMap::new(),
            applied: None,
            max_routes,
            default_cert: None,
            live,
        }
    }

    /// Handshakes for names no certificate covers get `host`'s certificate.
    pub fn with_default_cert(mut self, host: Option<String>) -> Self {
        self.default_cert = host.map(|h| h.to_ascii_lowercase());
        self
    }

    /// The certificates and challenges held, for the snapshot cache.
    pub fn tls_state(
        &self,
    ) -> (
        impl Iterator<Item = &v1::Certificate>,
        &HashMap<String, String>,
    ) {
        (self.certs.values().map(|s| &s.wire), &self.challenges)
    }

    /// Compiles the certificates a push brings, before anything is changed.
    /// One that expired is left out and logged (the previous one, if any,
    /// stays): a stored certificate that ran out must not block every push.
    fn next_tls(&self, body: &Body) -> Result<Option<TlsState>, PushError> {
        let none: &[String] = &[];
        let (delta, upserted, removed, answers, withdrawn) = match body {
            Body::Snapshot(s) => (false, &s.certificates, none, &s.challenges, none),
            Body::Delta(d) => (
                true,
                &d.certificates_upserted,
                &d.certificates_removed[..],
                &d.challenges_upserted,
                &d.challenges_removed[..],
            ),
        };
        let untouched =
            upserted.is_empty() && removed.is_empty() && answers.is_empty() && withdrawn.is_empty();
        if delta && untouched {
            return Ok(None);
        }
        let (mut certs, mut challenges) = if delta {
            (self.certs.clone(), self.challenges.clone())
        } else {
            Default::default()
        };
        for name in removed {
            certs.remove(name);
        }
        let now = std::time::SystemTime::now();
        for wire in upserted {
            // A snapshot repeats what is held: its contexts are kept.
            if let Some(held) = self.certs.get(&wire.name).filter(|h| h.wire == *wire) {
                certs.insert(wire.name.clone(), held.clone());
                continue;
            }
            match Served::compile(wire.clone(), now) {
                Ok(served) => {
                    certs.insert(wire.name.clone(), Arc::new(served));
                }
                Err(CertPushError::Invalid {
                    name,
                    source: source @ portico_proto::cert::CertError::Expired(_),
                }) => {
                    tracing::warn!(certificate = %name, error = %source, "not serving an expired certificate");
                }
                Err(e) => return Err(e.into()),
            }
        }
        for token in withdrawn {
            challenges.remove(token);
        }
        for c in answers {
            challenges.insert(c.token.clone(), c.key_authorization.clone());
        }
        Ok(Some((certs, challenges)))
    }

    pub fn applied_version(&self) -> u64 {
        self.applied.unwrap_or(0)
    }

    /// Starts from a cached configuration: served, but not ready until the
    /// control plane confirms or replaces it.
    pub fn apply_cached(&mut self, push: v1::ConfigPush) -> Result<(), PushError> {
        self.install(push)?;
        self.live.from_cache.store(true, Ordering::Release);
        Ok(())
    }

    /// Validates, compiles and swaps in one push from the control plane; on
    /// any error nothing changes.
    pub fn apply(&mut self, push: v1::ConfigPush) -> Result<(), PushError> {
        let confirm_only = self.applied == Some(push.version)
            && push.base_version == push.version
            && matches!(&push.body, Some(Body::Delta(d)) if d.upserted.is_empty() && d.removed.is_empty());
        if !confirm_only {
            self.install(push)?;
        }
        self.live.from_cache.store(false, Ordering::Release);
        self.live.ready.store(true, Ordering::Release);
        Ok(())
    }

    pub fn routes(&self) -> &HashMap<String, Arc<RouteSpec>> {
        &self.routes
    }

    fn install(&mut self, push: v1::ConfigPush) -> Result<(), PushError> {
        let applied = self.applied_version();
        if self.applied.is_some() && push.version < applied {
            return Err(PushError::Backwards {
                got: push.version,
                applied,
            });
        }
        let body = push.body.ok_or(PushError::Empty)?;
        let tls = self.next_tls(&body)?;
        // The routes are changed in place with an undo log, so a refused
        // push costs the size of the delta, not of the table.
        let mut undo: Vec<(String, Option<Arc<RouteSpec>>)> = Vec::new();
        match body {
            Body::Snapshot(snapshot) => {
                let next = snapshot
                    .routes
                    .iter()
                    .map(|r| RouteSpec::try_from(r).map(|s| (s.route_id.clone(), Arc::new(s))))
                    .collect::<Result<HashMap<_, _>, _>>()?;
                let old = std::mem::replace(&mut self.routes, next);
                undo = old.into_iter().map(|(k, v)| (k, Some(v))).collect();
                undo.push((String::new(), None)); // marks a snapshot: restore wholesale
            }
            Body::Delta(delta) => {
                if self.applied != Some(push.base_version) {
                    return Err(PushError::BaseMismatch {
                        base: push.base_version,
                        applied,
                    });
                }
                let upserted = delta
                    .upserted
                    .iter()
                    .map(RouteSpec::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                for id in &delta.removed {
                    let old = self.routes.remove(id);
                    undo.push((id.clone(), old));
                }
                for spec in upserted {
                    let id = spec.route_id.clone();
                    let old = self.routes.insert(id.clone(), Arc::new(spec));
                    undo.push((id, old));
                }
            }
        }
        let snapshot = undo
            .last()
            .is_some_and(|(k, v)| k.is_empty() && v.is_none());
        let checked = if self.max_routes > 0 && self.routes.len() > self.max_routes {
            Err(PushError::TooMany {
                count: self.routes.len(),
                max: self.max_routes,
            })
        } else if snapshot {
            RouteTable::compile(self.routes.values(), &self.live.registry)
                .map_err(PushError::Compile)
        } else {
            let current = self.live.table.load();
            let upserted: Vec<&Arc<RouteSpec>> = undo
                .iter()
                .filter_map(|(id, _)| self.routes.get(id))
                .collect();
            let replaced: Vec<&RouteSpec> =
                undo.iter().filter_map(|(_, old)| old.as_deref()).collect();
            current
                .with_changes(&upserted, &replaced, &self.live.registry)
                .map_err(PushError::Compile)
        };
        let table = match checked {
            Ok(table) => table,
            Err(e) => {
                if snapshot {
                    undo.pop();
                    self.routes = undo
                        .into_iter()
                        .filter_map(|(k, v)| v.map(|v| (k, v)))
                        .collect();
                } else {
                    for (id, old) in undo.into_iter().rev() {
                        match old {
                            Some(spec) => self.routes.insert(id, spec),
                            None => self.routes.remove(&id),
                        };
                    }
                }
                return Err(e);
            }
        };
        // Runtime state of routes (and backends) that are gone is dropped.
        if snapshot {
            let live_ids: HashMap<&str, String> = self
                .routes
                .values()
                .map(|r| (r.route_id.as_str(), r.backend.to_string()))
                .collect();
            let gone = self.live.registry.retain(&live_ids);
            self.live.leftover_stats.lock().extend(gone);
        } else {
            for (id, old) in &undo {
                let now = self.routes.get(id);
                if let Some(old) = old {
                    if now.is_none_or(|n| n.backend != old.backend) {
                        let gone =
                            self.live
                                .registry
                                .forget(id, &old.backend.to_string(), now.is_none());
                        self.live.leftover_stats.lock().extend(gone);
                    }
                }
            }
        }
        if let Some((certs, challenges)) = tls {
            let store = CertStore::build(&certs, self.default_cert.as_deref());
            self.live.certs.store(Arc::new(store));
            self.live.challenges.store(Arc::new(challenges.clone()));
            (self.certs, self.challenges) = (certs, challenges);
        }
        self.live.table.store(Arc::new(table));
        self.live.version.store(push.version, Ordering::Release);
        self.applied = Some(push.version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, backend: &str) -> v1::Route {
        v1::Route {
            route_id: id.into(),
            service: "svc".into(),
            domains: vec!["a.com".into()],
            path: "/".into(),
            backend_url: backend.into(),
            ..Default::default()
        }
    }

    fn snapshot(version: u64, routes: Vec<v1::Route>) -> v1::ConfigPush {
        v1::ConfigPush {
            version,
            body: Some(Body::Snapshot(v1::Snapshot {
                routes,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn delta(
        version: u64,
        base: u64,
        upserted: Vec<v1::Route>,
        removed: Vec<&str>,
    ) -> v1::ConfigPush {
        v1::ConfigPush {
            version,
            base_version: base,
            body: Some(Body::Delta(v1::Delta {
                upserted,
                removed: removed.into_iter().map(String::from).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn bad_pushes_change_nothing() {
        let live = Arc::new(Live::default());
        let mut state = ConfigState::new(live.clone(), 0);
        assert!(!live.ready.load(Ordering::Acquire));
        state
            .apply(snapshot(3, vec![route("r1", "http://127.0.0.1:1")]))
            .unwrap();
        assert!(live.ready.load(Ordering::Acquire));
        assert!(matches!(
            state.apply(delta(4, 3, vec![route("r2", "ftp://x")], vec![])),
            Err(PushError::Invalid(_))
        ));
        assert!(matches!(
            state.apply(snapshot(2, vec![])),
            Err(PushError::Backwards { got: 2, applied: 3 })
        ));
        assert!(matches!(
            state.apply(delta(9, 7, vec![], vec!["r1"])),
            Err(PushError::BaseMismatch { .. })
        ));
        assert_eq!(live.version.load(Ordering::Acquire), 3);
        assert_eq!(live.table.load().len(), 1);
        state
            .apply(delta(
                4,
                3,
                vec![route("r2", "http://127.0.0.1:2")],
                vec!["r1"],
            ))
            .unwrap();
        let table = live.table.load();
        assert_eq!(live.version.load(Ordering::Acquire), 4);
        assert_eq!(
            table.lookup("a.com", "/").unwrap().entries[0].spec.route_id,
            "r2"
        );
    }

    /// A self-signed pair for `host`, valid from `from` days ago to `to` days from now.
    fn pair(host: &str, from: u32, to: i64) -> (String, String) {
        portico_proto::cert::self_signed(&[host], -i64::from(from), to)
    }

    fn cert(name: &str, (chain, key): &(String, String)) -> v1::Certificate {
        v1::Certificate {
            name: name.into(),
            chain_pem: chain.clone(),
            key_pem: key.clone(),
            source: "file".into(),
            ..Default::default()
        }
    }

    fn tls_delta(version: u64, certs: Vec<v1::Certificate>, removed: Vec<&str>) -> v1::ConfigPush {
        v1::ConfigPush {
            version,
            base_version: version - 1,
            body: Some(Body::Delta(v1::Delta {
                certificates_upserted: certs,
                certificates_removed: removed.into_iter().map(String::from).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn certificates_are_checked_before_anything_changes() {
        let live = Arc::new(Live::default());
        let mut state = ConfigState::new(live.clone(), 0);
        state.apply(snapshot(1, vec![])).unwrap();
        let a = pair("a.test", 1, 30);
        state
            .apply(tls_delta(2, vec![cert("file:a", &a)], vec![]))
            .unwrap();
        assert!(live.certs.load().for_host("a.test").is_some());

        // A key that is not the certificate's: refused, nothing changes.
        let other = pair("a.test", 1, 30);
        let mismatched = cert("file:a", &(a.0.clone(), other.1.clone()));
        let err = state
            .apply(tls_delta(3, vec![mismatched], vec![]))
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(live.version.load(Ordering::Acquire), 2);
        assert_eq!(
            live.certs.load().for_host("a.test").unwrap().wire.chain_pem,
            a.0
        );

        // An expired one is left out, and the one held stays.
        let expired = pair("a.test", 30, -1);
        state
            .apply(tls_delta(3, vec![cert("file:a", &expired)], vec![]))
            .unwrap();
        assert_eq!(
            live.certs.load().for_host("a.test").unwrap().wire.chain_pem,
            a.0
        );
        state.apply(tls_delta(4, vec![], vec!["file:a"])).unwrap();
        assert!(live.certs.load().is_empty());
    }
}
