//! A session's pure state: identity, active routes and the changes staged on
//! top of them. No actors, no I/O; the actor in `actor.rs` drives it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use portico_proto::settings::Maintenance;
use portico_proto::time::whole_ms;
use portico_proto::{BackendUrl, RouteSpec};

use crate::registry::auth::TokenHash;
use serde_json::{json, Map, Value};

use super::settings::Settings;
use crate::protocol::{EventType, MaintTarget, RouteField, RouteId, RouteInput, Scopes};

/// Why a session command was refused; the text goes to the service verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("route not found")]
    RouteNotFound,
    #[error("route {0}: duplicate of {1} (same domains, path and backend)")]
    Duplicate(RouteId, RouteId),
    #[error("route {0}: {1} set for a route that is not active after this apply")]
    Dangling(RouteId, &'static str),
    #[error("no active route of this session matches target {0}")]
    NoMatch(String),
}

/// Operational state, applied at once without staging.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ops {
    /// Routes in maintenance, with when they entered it.
    pub maintenance: BTreeMap<RouteId, SystemTime>,
    /// Where maintenance traffic goes; `None` is the built-in 503 page.
    pub maintenance_backend: Option<BackendUrl>,
    pub drain: Option<Drain>,
}

pub use portico_proto::settings::Drain;

/// What an apply would make active: routes, settings, and the scopes applied.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub scopes: Scopes,
    pub routes: BTreeMap<RouteId, RouteInput>,
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Staged {
    Upsert(RouteInput),
    Remove,
}

/// Who the session is, fixed at REGISTER.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The session's key (`session/key.rs`), never its id: the id is the
    /// client's credential and is kept nowhere.
    pub id: String,
    pub service: String,
    pub instance: String,
    pub maintenance_port: u16,
    pub metadata: Map<String, Value>,
    pub peer_ip: Option<IpAddr>,
    pub connected_at: SystemTime,
    /// With registry auth: the digest of the token it registered with, so
    /// its grant (as the auth file says now) can be looked up.
    pub token: Option<TokenHash>,
}

impl Identity {
    /// The public handle views and logs name it by.
    pub fn handle(&self) -> String {
        super::key::handle(&self.instance, &self.id)
    }
}

#[derive(Debug, Clone)]
pub struct SessionState {
    pub identity: Identity,
    active: BTreeMap<RouteId, RouteInput>,
    staged: BTreeMap<RouteId, Staged>,
    /// Hash of a route's input -> ids that had it (active or staged); may
    /// hold stale ids, so candidates are checked. Keeps ROUTE_ADD's
    /// duplicate check constant-time for sessions with many routes.
    by_input: BTreeSet<(u64, RouteId)>,
    pub settings: Settings,
    pub ops: Ops,
    pub last_apply: Option<SystemTime>,
    /// The event types sent home (`SUBSCRIBE`); kept with the session, so
    /// they survive a restart and a move to another replica.
    pub subscriptions: BTreeSet<EventType>,
}

fn input_hash(input: &RouteInput) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    h.finish()
}

impl SessionState {
    pub fn new(identity: Identity) -> Self {
        SessionState {
            identity,
            active: BTreeMap::new(),
            staged: BTreeMap::new(),
            by_input: BTreeSet::new(),
            settings: Settings::default(),
            ops: Ops::default(),
            last_apply: None,
            subscriptions: BTreeSet::new(),
        }
    }

    /// Stages a route, or returns the id of an identical one the session
    /// already has (active and not being removed, or staged), so replays are safe.
    pub fn add_route_with<E>(
        &mut self,
        input: RouteInput,
        allocate: impl FnOnce() -> Result<RouteId, E>,
    ) -> Result<RouteId, E> {
        if let Some(id) = self.find_identical(&input) {
            return Ok(id);
        }
        let id = allocate()?;
        self.index(id, &input);
        self.staged.insert(id, Staged::Upsert(input));
        Ok(id)
    }

    /// `add_route_with` an allocator that cannot fail.
    #[cfg(test)]
    pub fn add_route(&mut self, input: RouteInput, allocate: impl FnOnce() -> RouteId) -> RouteId {
        self.add_route_with(input, || Ok::<_, std::convert::Infallible>(allocate()))
            .unwrap_or_else(|never| match never {})
    }

    fn index(&mut self, id: RouteId, input: &RouteInput) {
        self.by_input.insert((input_hash(input), id));
    }

    /// Rebuilds the index from the routes alone, once stale ids outnumber them.
    fn compact_index(&mut self, force: bool) {
        let live = self.active.len() + self.staged.len();
        if !force && self.by_input.len() <= 2 * live + 64 {
            return;
        }
        let staged = self.staged.iter().filter_map(|(id, s)| match s {
            Staged::Upsert(r) => Some((input_hash(r), *id)),
            Staged::Remove => None,
        });
        let active = self.active.iter().map(|(id, r)| (input_hash(r), *id));
        self.by_input = staged.chain(active).collect();
    }

    /// The lowest-numbered staged route equal to `input`, else the lowest
    /// active one not being changed.
    /// An identical route exists (adding it again changes nothing).
    pub fn has_identical(&self, input: &RouteInput) -> bool {
        self.find_identical(input).is_some()
    }

    /// A bound from above of `routes_proposed`, in constant time.
    pub fn routes_at_most(&self) -> usize {
        self.active.len() + self.staged.len()
    }

    /// Routes the session would have after applying what is staged.
    pub fn routes_proposed(&self) -> usize {
        let (mut added, mut removed) = (0, 0);
        for (id, change) in &self.staged {
            match change {
                Staged::Upsert(_) if !self.active.contains_key(id) => added += 1,
                Staged::Upsert(_) => {}
                Staged::Remove => removed += 1,
            }
        }
        (self.active.len() + added).saturating_sub(removed)
    }

    fn find_identical(&self, input: &RouteInput) -> Option<RouteId> {
        let h = input_hash(input);
        let candidates = || {
            self.by_input
                .range((h, RouteId(0))..=(h, RouteId(u64::MAX)))
                .map(|(_, id)| *id)
        };
        candidates()
            .find(|id| matches!(self.staged.get(id), Some(Staged::Upsert(r)) if r == input))
            .or_else(|| {
                candidates()
                    .find(|id| self.active.get(id) == Some(input) && !self.staged.contains_key(id))
            })
    }

    pub fn remove_route(&mut self, id: RouteId) -> Result<(), SessionError> {
        match (self.active.contains_key(&id), self.staged.get(&id)) {
            (true, Some(Staged::Remove)) | (false, None) | (false, Some(Staged::Remove)) => {
                Err(SessionError::RouteNotFound)
            }
            (true, _) => {
                self.staged.insert(id, Staged::Remove);
                Ok(())
            }
            (false, Some(Staged::Upsert(_))) => {
                self.staged.remove(&id);
                Ok(())
            }
        }
    }

    pub fn update_route(&mut self, id: RouteId, field: RouteField) -> Result<(), SessionError> {
        let mut route = match self.staged.get(&id) {
            Some(Staged::Upsert(r)) => r.clone(),
            Some(Staged::Remove) => return Err(SessionError::RouteNotFound),
            None => self
                .active
                .get(&id)
                .cloned()
                .ok_or(SessionError::RouteNotFound)?,
        };
        match field {
            RouteField::BackendUrl(b) => route.backend = b,
            RouteField::Priority(p) => route.priority = p,
            RouteField::Domains(d) => route.domains = d,
            RouteField::Path(p) => route.path = p,
        }
        if self.active.get(&id) == Some(&route) {
            self.staged.remove(&id);
        } else {
            self.index(id, &route);
            self.staged.insert(id, Staged::Upsert(route));
        }
        self.compact_index(false);
        Ok(())
    }

    /// Whether the session can see this route (active or staged, not removed).
    pub fn owns(&self, id: RouteId) -> bool {
        match self.staged.get(&id) {
            Some(Staged::Remove) => false,
            Some(Staged::Upsert(_)) => true,
            None => self.active.contains_key(&id),
        }
    }

    /// Whether the route is the session's at all, also while pending removal,
    /// so settings on a route being removed can still be taken back.
    pub fn knows(&self, id: RouteId) -> bool {
        self.active.contains_key(&id) || self.owns(id)
    }

    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty() || self.settings.has_staged()
    }

    /// The active routes.
    pub fn active(&self) -> &BTreeMap<RouteId, RouteInput> {
        &self.active
    }

    pub fn active_ids(&self) -> impl Iterator<Item = RouteId> + '_ {
        self.active.keys().copied()
    }

    pub fn routes_active(&self) -> usize {
        self.active.len()
    }

    pub fn routes_staged(&self) -> usize {
        self.staged.len()
    }

    /// The active set as it would be after applying everything staged.
    pub fn proposed(&self) -> BTreeMap<RouteId, RouteInput> {
        let mut next = self.active.clone();
        for (id, change) in &self.staged {
            match change {
                Staged::Upsert(r) => {
                    next.insert(*id, r.clone());
                }
                Staged::Remove => {
                    next.remove(id);
                }
            }
        }
        next
    }

    /// What applying `scopes` would make active, checked for what depends
    /// on more than one command: duplicates and settings of missing routes.
    pub fn propose(&self, scopes: Scopes) -> Result<Proposal, SessionError> {
        let routes = if scopes.routes {
            self.proposed()
        } else {
            self.active.clone()
        };
        let mut seen = std::collections::HashMap::new();
        for (id, r) in &routes {
            if let Some(first) = seen.insert((&r.domains, &r.path, &r.backend), *id) {
                return Err(SessionError::Duplicate(*id, first));
            }
        }
        let ids: BTreeSet<RouteId> = routes.keys().copied().collect();
        if let Some((id, what)) = self.settings.dangling(scopes, &ids) {
            return Err(SessionError::Dangling(id, what));
        }
        let mut settings = self.settings.clone();
        settings.commit(scopes);
        settings.forget_routes(&ids);
        Ok(Proposal {
            scopes,
            routes,
            settings,
        })
    }

    /// Makes a committed proposal active; what it did not cover stays staged.
    pub fn commit(&mut self, proposal: Proposal, at: SystemTime) {
        if proposal.scopes.routes {
            self.staged.clear();
        }
        self.active = proposal.routes;
        self.settings = proposal.settings;
        self.ops
            .maintenance
            .retain(|id, _| self.active.contains_key(id));
        self.last_apply = Some(at);
        self.compact_index(false);
    }

    pub fn rollback(&mut self) {
        self.staged.clear();
        self.settings.rollback();
    }

    /// The active routes with `ops` in place of the current operational state.
    pub fn active_specs(&self, ops: &Ops) -> Vec<RouteSpec> {
        self.to_specs(&self.active, &self.settings, ops)
    }

    /// Routes as the global configuration holds them and the data planes
    /// serve them. Times are cut to whole milliseconds, as they are stored,
    /// so a restored session's routes equal the ones it committed.
    pub fn to_specs(
        &self,
        routes: &BTreeMap<RouteId, RouteInput>,
        settings: &Settings,
        ops: &Ops,
    ) -> Vec<RouteSpec> {
        let drain = ops.drain.map(|d| Drain {
            started_at: whole_ms(d.started_at),
            duration: Duration::from_millis(d.duration.as_millis() as u64),
        });
        routes
            .iter()
            .map(|(id, r)| RouteSpec {
                route_id: id.to_string(),
                session: self.identity.id.clone(),
                owner: self.identity.handle(),
                service: self.identity.service.clone(),
                instance: self.identity.instance.clone(),
                domains: r.domains.clone(),
                path: r.path.clone(),
                backend: r.backend.clone(),
                priority: r.priority,
                settings: settings.resolve(*id),
                drain,
                maintenance: ops.maintenance.get(id).map(|at| Maintenance {
                    backend: ops.maintenance_backend.clone(),
                    entered_at: whole_ms(*at),
                }),
            })
            .collect()
    }

    /// The active routes a maintenance target names.
    pub fn maintenance_targets(&self, target: &MaintTarget) -> Result<Vec<RouteId>, SessionError> {
        let ids: Vec<RouteId> = match target {
            MaintTarget::All => self.active.keys().copied().collect(),
            MaintTarget::Routes(ids) => {
                if let Some(_missing) = ids.iter().find(|id| !self.active.contains_key(id)) {
                    return Err(SessionError::RouteNotFound);
                }
                ids.clone()
            }
            MaintTarget::Path(p) => self
                .active
                .iter()
                .filter(|(_, r)| &r.path == p)
                .map(|(id, _)| *id)
                .collect(),
            MaintTarget::Domain(d) => self
                .active
                .iter()
                .filter(|(_, r)| r.domains.contains(d))
                .map(|(id, _)| *id)
                .collect(),
        };
        if ids.is_empty() {
            return Err(SessionError::NoMatch(target.to_string()));
        }
        Ok(ids)
    }

    /// The backend urls of active routes, for the MAINT_EXIT probe.
    pub fn backends_of(&self, ids: &[RouteId]) -> Vec<BackendUrl> {
        let mut urls: Vec<BackendUrl> = ids
            .iter()
            .filter_map(|id| self.active.get(id))
            .map(|r| r.backend.clone())
            .collect();
        urls.dedup();
        urls
    }

    /// CONFIG_DIFF: staged route changes and counts of staged settings.
    pub fn diff_json(&self) -> Value {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut modified = Vec::new();
        for (id, change) in &self.staged {
            match (change, self.active.contains_key(id)) {
                (Staged::Upsert(r), false) => added.push(route_json(*id, r, "staged")),
                (Staged::Upsert(r), true) => modified.push(route_json(*id, r, "modified")),
                (Staged::Remove, _) => removed.push(Value::String(id.to_string())),
            }
        }
        let mut diff = self.settings.diff_json();
        diff["routes"] = json!({"added": added, "removed": removed, "modified": modified});
        diff
    }

    /// Installs restored active state (nothing staged).
    pub fn restore_active(
        &mut self,
        routes: BTreeMap<RouteId, RouteInput>,
        settings: Settings,
        ops: Ops,
        last_apply: Option<SystemTime>,
    ) {
        self.active = routes;
        self.staged.clear();
        self.settings = settings;
        self.ops = ops;
        self.last_apply = last_apply;
        self.compact_index(true);
    }

    /// ROUTE_LIST: active routes with their pending state, then staged new ones.
    pub fn list_json(&self) -> Value {
        let mut items = Vec::with_capacity(self.active.len() + self.staged.len());
        for (id, r) in &self.active {
            let (route, status) = match self.staged.get(id) {
                None => (r, "active"),
                Some(Staged::Remove) => (r, "pending_removal"),
                Some(Staged::Upsert(new)) => (new, "modified"),
            };
            items.push(route_json(*id, route, status));
        }
        for (id, change) in &self.staged {
            if let (Staged::Upsert(r), false) = (change, self.active.contains_key(id)) {
                items.push(route_json(*id, r, "staged"));
            }
        }
        Value::Array(items)
    }
}

fn route_json(id: RouteId, r: &RouteInput, status: &str) -> Value {
    let backend = r.backend.to_string();
    json!({
        "route_id": id.to_string(),
        "id": id.to_string(),
        "domains": r.domains,
        "path": r.path,
        "backend": backend,
        "backend_url": backend,
        "priority": r.priority,
        "status": status,
    })
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
