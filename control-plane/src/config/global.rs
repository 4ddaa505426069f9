//! The global configuration: every session's active routes, the ownership
//! index of host+path by service, the certificates and ACME challenges,
//! the version and what recent versions changed. Pure; the committer actor is its only writer, the publisher
//! reads it (`Shared`) to catch returning data planes up.

/// The global configuration as the committer and the publisher share it.
pub type SharedConfig = Arc<parking_lot::RwLock<GlobalConfig>>;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use portico_proto::{v1, RouteSpec};

use crate::config::history::{self, Commit, History, Key, Tls, TlsChange};

/// A proposal that cannot be committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("route {route_id}: {host}{path} is owned by service {owner}")]
    Owned {
        route_id: String,
        host: String,
        path: String,
        owner: String,
    },
}

#[derive(Debug, Default)]
struct SessionRoutes {
    service: String,
    routes: BTreeMap<String, Arc<RouteSpec>>,
}

/// Host and path prefix (as matched), the unit of ownership.
type OwnerKey = (String, String);

#[derive(Default)]
pub struct GlobalConfig {
    version: u64,
    /// What each recent version changed, for data planes that come back.
    history: History,
    sessions: HashMap<String, SessionRoutes>,
    /// (host, prefix) -> (service, how many routes claim it).
    owners: HashMap<OwnerKey, (String, usize)>,
    /// Every active route id, so reports about removed routes can be told apart.
    ids: HashSet<String>,
    tls: Tls,
    /// A change could not be made durable: what is in memory is ahead of
    /// the store, so nothing may be pushed from it (the process is stopping).
    failed: bool,
}

fn owner_keys(route: &RouteSpec) -> impl Iterator<Item = OwnerKey> + '_ {
    route
        .owner_keys()
        .map(|(host, prefix)| (host.to_string(), prefix.to_string()))
}

impl GlobalConfig {
    pub fn new(version: u64) -> Self {
        GlobalConfig {
            version,
            ..Default::default()
        }
    }

    /// Refuses routes whose host and path another service already serves.
    pub fn check(&self, service: &str, routes: &[RouteSpec]) -> Result<(), CommitError> {
        for route in routes {
            for (host, prefix) in owner_keys(route) {
                if let Some((owner, _)) = self.owners.get(&(host.clone(), prefix)) {
                    if owner != service {
                        return Err(CommitError::Owned {
                            route_id: route.route_id.clone(),
                            host,
                            path: route.path.clone(),
                            owner: owner.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Replaces a session's active routes. Returns `None` when nothing changed,
    /// so an empty apply does not bump the version.
    pub fn commit(
        &mut self,
        session_key: &str,
        service: &str,
        routes: Vec<RouteSpec>,
    ) -> Result<Option<Commit>, CommitError> {
        self.check(service, &routes)?;
        Ok(self.apply(session_key, service, routes))
    }

    /// `commit` of routes already checked (the committer checks while it
    /// plans, before the store is written).
    pub fn apply(
        &mut self,
        session_key: &str,
        service: &str,
        routes: Vec<RouteSpec>,
    ) -> Option<Commit> {
        let commit = self.replace(session_key, service, routes);
        if commit.upserted.is_empty() && commit.removed.is_empty() {
            return None;
        }
        Some(self.seal(self.version + 1, commit))
    }

    /// Whether replacing a session's active routes with `routes` changes any.
    pub fn changes(&self, session_key: &str, routes: &[RouteSpec]) -> bool {
        match self.sessions.get(session_key) {
            None => !routes.is_empty(),
            Some(old) => {
                old.routes.len() != routes.len()
                    || routes
                        .iter()
                        .any(|r| old.routes.get(&r.route_id).is_none_or(|o| **o != *r))
            }
        }
    }

    /// Replaces a session's routes, unchecked and without a new version:
    /// what changed, for `seal`.
    fn replace(&mut self, session_key: &str, service: &str, routes: Vec<RouteSpec>) -> Commit {
        let old = self.sessions.remove(session_key).unwrap_or_default();
        let mut next = SessionRoutes {
            service: service.to_string(),
            routes: BTreeMap::new(),
        };
        let mut commit = Commit::default();
        for route in routes {
            let route = match old.routes.get(&route.route_id) {
                Some(r) if **r == route => r.clone(),
                known => {
                    let route = Arc::new(route);
                    if known.is_none() {
                        commit.added.push(route.route_id.clone());
                    }
                    commit.upserted.push(route.clone());
                    route
                }
            };
            next.routes.insert(route.route_id.clone(), route);
        }
        commit.removed = old
            .routes
            .keys()
            .filter(|id| !next.routes.contains_key(*id))
            .cloned()
            .collect();
        for route in old.routes.values() {
            self.release(route);
        }
        for route in next.routes.values() {
            self.claim(service, route);
        }
        for id in &commit.removed {
            self.ids.remove(id);
        }
        self.ids.extend(commit.added.iter().cloned());
        if !next.routes.is_empty() {
            self.sessions.insert(session_key.to_string(), next);
        }
        commit
    }

    /// Makes what changed `version`, following the current one, and keeps it
    /// in the history.
    fn seal(&mut self, version: u64, mut commit: Commit) -> Commit {
        commit.base = self.version;
        commit.version = version;
        self.version = version;
        let changed = commit
            .upserted
            .iter()
            .map(|r| Key::Route(r.route_id.clone()))
            .chain(commit.removed.iter().cloned().map(Key::Route))
            .chain(commit.tls.keys())
            .collect();
        self.history.record(commit.base, version, changed);
        commit
    }

    /// Takes in `version`, written by another replica: the sessions' routes
    /// as now stored, the sessions gone and the certificates changed, all
    /// checked by their writer against the state this one holds. One commit
    /// of what changed (possibly nothing but the version); `None` when this
    /// configuration is already there.
    pub fn follow(
        &mut self,
        version: u64,
        sessions: Vec<(String, String, Vec<RouteSpec>)>,
        gone: Vec<String>,
        tls: TlsChange,
    ) -> Option<Commit> {
        if version <= self.version {
            return None;
        }
        let mut commit = Commit::default();
        let gone = gone.into_iter().filter_map(|id| {
            let service = self.sessions.get(&id)?.service.clone();
            Some((id, service, Vec::new()))
        });
        for (id, service, routes) in gone.collect::<Vec<_>>().into_iter().chain(sessions) {
            let part = self.replace(&id, &service, routes);
            commit.upserted.extend(part.upserted);
            commit.added.extend(part.added);
            commit.removed.extend(part.removed);
        }
        commit.tls = self.effective_tls(tls);
        self.apply_tls(&commit.tls, version);
        Some(self.seal(version, commit))
    }

    /// Brings this configuration to the whole state stored at `version`
    /// (after a missed change or a conflict): one commit of the differences.
    pub fn resync(
        &mut self,
        version: u64,
        sessions: Vec<(String, String, Vec<RouteSpec>)>,
        certificates: Vec<v1::Certificate>,
        challenges: Vec<(String, String)>,
    ) -> Option<Commit> {
        let stored: HashSet<&str> = sessions.iter().map(|(id, _, _)| id.as_str()).collect();
        let gone = self
            .sessions
            .keys()
            .filter(|id| !stored.contains(id.as_str()))
            .cloned()
            .collect();
        let tls = TlsChange {
            certificates_removed: self
                .tls
                .certificates
                .keys()
                .filter(|n| !certificates.iter().any(|c| &c.name == *n))
                .cloned()
                .collect(),
            challenges_removed: self
                .tls
                .challenges
                .keys()
                .filter(|t| !challenges.iter().any(|(c, _)| c == *t))
                .cloned()
                .collect(),
            certificates: certificates.into_iter().map(Arc::new).collect(),
            challenges: challenges
                .into_iter()
                .map(|(token, key_authorization)| v1::AcmeChallenge {
                    token,
                    key_authorization,
                })
                .collect(),
        };
        self.follow(version, sessions, gone, tls)
    }

    /// Installs, replaces and removes certificates and challenges; `None`
    /// when that changes nothing.
    pub fn change_tls(&mut self, change: TlsChange) -> Option<Commit> {
        let change = self.effective_tls(change);
        if change.is_empty() {
            return None;
        }
        let version = self.version + 1;
        self.apply_tls(&change, version);
        let commit = Commit {
            tls: change,
            ..Default::default()
        };
        Some(self.seal(version, commit))
    }

    /// `change` without what it would not change.
    pub fn effective_tls(&self, mut change: TlsChange) -> TlsChange {
        let tls = &self.tls;
        change
            .certificates
            .retain(|c| tls.certificates.get(&c.name) != Some(c));
        change
            .certificates_removed
            .retain(|n| tls.certificates.contains_key(n));
        change
            .challenges
            .retain(|c| tls.challenges.get(&c.token) != Some(&c.key_authorization));
        change
            .challenges_removed
            .retain(|t| tls.challenges.contains_key(t));
        change
    }

    fn apply_tls(&mut self, change: &TlsChange, version: u64) {
        let tls = &mut self.tls;
        for name in &change.certificates_removed {
            tls.certificates.remove(name);
            tls.since.remove(name);
        }
        for cert in &change.certificates {
            tls.certificates.insert(cert.name.clone(), cert.clone());
            tls.since.insert(cert.name.clone(), version);
        }
        for token in &change.challenges_removed {
            tls.challenges.remove(token);
        }
        for c in &change.challenges {
            tls.challenges
                .insert(c.token.clone(), c.key_authorization.clone());
        }
    }

    /// Puts back stored certificates and challenges, without a new version.
    pub fn restore_tls(
        &mut self,
        certificates: Vec<v1::Certificate>,
        challenges: Vec<(String, String)>,
    ) {
        for cert in certificates {
            self.tls.since.insert(cert.name.clone(), self.version);
            self.tls
                .certificates
                .insert(cert.name.clone(), Arc::new(cert));
        }
        self.tls.challenges.extend(challenges);
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Hosts of active routes, each once.
    pub fn hosts(&self) -> std::collections::BTreeSet<&str> {
        self.all_routes()
            .flat_map(|r| r.domains.iter().map(String::as_str))
            .collect()
    }

    /// Sessions with an active route on a host `covers` accepts.
    pub fn sessions_on(&self, covers: impl Fn(&str) -> bool) -> Vec<String> {
        self.sessions
            .iter()
            .filter(|(_, s)| {
                s.routes
                    .values()
                    .any(|r| r.domains.iter().any(|d| covers(d)))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Moves a session's routes to the session that took it over, as one
    /// commit: the same route ids, now naming the new session.
    pub fn transfer(
        &mut self,
        old_session: &str,
        new_session: &str,
        service: &str,
        routes: Vec<RouteSpec>,
    ) -> Result<Option<Commit>, CommitError> {
        if let Some(entry) = self.sessions.remove(old_session) {
            self.sessions.insert(new_session.to_string(), entry);
        }
        self.commit(new_session, service, routes)
    }

    /// Puts back a session's routes as they were stored, without a new version.
    pub fn restore(&mut self, session_key: &str, service: &str, routes: Vec<RouteSpec>) {
        let mut entry = SessionRoutes {
            service: service.to_string(),
            routes: BTreeMap::new(),
        };
        for route in routes {
            self.claim(service, &route);
            self.ids.insert(route.route_id.clone());
            entry.routes.insert(route.route_id.clone(), Arc::new(route));
        }
        self.sessions.insert(session_key.to_string(), entry);
    }

    /// The keys of the sites (`--sites`) that have routes.
    pub fn site_keys(&self) -> Vec<String> {
        let keys = self.sessions.keys();
        keys.filter(|k| crate::session::key::is_site(k))
            .cloned()
            .collect()
    }

    /// The active routes of one session (or site).
    pub fn routes_of(&self, session_key: &str) -> impl Iterator<Item = &Arc<RouteSpec>> {
        self.sessions
            .get(session_key)
            .into_iter()
            .flat_map(|s| s.routes.values())
    }

    /// Every route, as a data plane's first snapshot needs them.
    pub fn all_routes(&self) -> impl Iterator<Item = &Arc<RouteSpec>> {
        self.sessions.values().flat_map(|s| s.routes.values())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Marks the configuration as ahead of the store after a failed write.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether `route_id` is active now.
    pub fn has_route(&self, route_id: &str) -> bool {
        self.ids.contains(route_id)
    }

    /// The key of the session whose active route `route_id` is (reports
    /// from data planes name the route only).
    pub fn session_of(&self, route_id: &str) -> Option<&str> {
        if !self.has_route(route_id) {
            return None;
        }
        self.sessions
            .iter()
            .find(|(_, s)| s.routes.contains_key(route_id))
            .map(|(key, _)| key.as_str())
    }

    /// Sizes of what it keeps, for `/debug/counts`.
    pub fn counts(&self) -> serde_json::Value {
        let (versions, ids) = self.history.counts();
        serde_json::json!({
            "global_sessions": self.sessions.len(),
            "global_routes": self.ids.len(),
            "owners": self.owners.len(),
            "history_versions": versions,
            "history_ids": ids,
        })
    }

    /// What a data plane holding `applied` needs to reach this version.
    pub fn catch_up(&self, applied: u64) -> v1::ControlPlaneMessage {
        history::catch_up(
            &self.history,
            self.version,
            applied,
            self.all_routes(),
            &self.tls,
        )
    }

    /// Every route at this version, in route-id order.
    pub fn snapshot(&self) -> v1::GetSnapshotResponse {
        let mut routes: Vec<&Arc<RouteSpec>> = self.all_routes().collect();
        routes.sort_by_key(|r| portico_proto::model::parse_route_id(&r.route_id).unwrap_or(0));
        let routes = routes.into_iter().map(|r| v1::Route::from(&**r)).collect();
        v1::GetSnapshotResponse {
            version: self.version,
            snapshot: Some(v1::Snapshot {
                routes,
                ..Default::default()
            }),
        }
    }

    /// Drops every route of a session (shutdown or expiry).
    pub fn remove_session(&mut self, session_key: &str) -> Option<Commit> {
        let service = self.sessions.get(session_key)?.service.clone();
        self.commit(session_key, &service, Vec::new())
            .expect("removing routes cannot conflict")
    }

    fn claim(&mut self, service: &str, route: &RouteSpec) {
        for key in owner_keys(route) {
            self.owners
                .entry(key)
                .or_insert_with(|| (service.to_string(), 0))
                .1 += 1;
        }
    }

    fn release(&mut self, route: &RouteSpec) {
        for key in owner_keys(route) {
            if let Some(entry) = self.owners.get_mut(&key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.owners.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "global_tests.rs"]
mod tests;
