//! A session's pure state: identity, active routes and the changes staged on
//! top of them. No actors, no I/O; the actor in `actor.rs` drives it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use portico_proto::v1;
use serde_json::{json, Map, Value};

use crate::protocol::{RouteId, RouteInput};

/// Why a session command was refused; the text goes to the service verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("route not found")]
    RouteNotFound,
    #[error("route {0}: duplicate of {1} (same domains, path and backend)")]
    Duplicate(RouteId, RouteId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Staged {
    Upsert(RouteInput),
    Remove,
}

/// Who the session is, fixed at REGISTER.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub service: String,
    pub instance: String,
    #[expect(
        dead_code,
        reason = "used by maintenance, which arrives with the full protocol"
    )]
    pub maintenance_port: u16,
    pub metadata: Map<String, Value>,
    #[expect(
        dead_code,
        reason = "used by maintenance, which arrives with the full protocol"
    )]
    pub peer_ip: Option<IpAddr>,
    pub connected_at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct SessionState {
    pub identity: Identity,
    active: BTreeMap<RouteId, RouteInput>,
    staged: BTreeMap<RouteId, Staged>,
    pub last_apply: Option<SystemTime>,
}

impl SessionState {
    pub fn new(identity: Identity) -> Self {
        SessionState {
            identity,
            active: BTreeMap::new(),
            staged: BTreeMap::new(),
            last_apply: None,
        }
    }

    /// Stages a route, or returns the id of an identical one the session
    /// already has (active and not being removed, or staged), so replays are safe.
    pub fn add_route(&mut self, input: RouteInput, allocate: impl FnOnce() -> RouteId) -> RouteId {
        if let Some(id) = self.find_identical(&input) {
            return id;
        }
        let id = allocate();
        self.staged.insert(id, Staged::Upsert(input));
        id
    }

    fn find_identical(&self, input: &RouteInput) -> Option<RouteId> {
        let staged = self.staged.iter().find_map(|(id, s)| match s {
            Staged::Upsert(r) if r == input => Some(*id),
            _ => None,
        });
        staged.or_else(|| {
            self.active
                .iter()
                .find(|(id, r)| *r == input && !self.staged.contains_key(id))
                .map(|(id, _)| *id)
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

    /// Checks that depend on more than one route of this session.
    pub fn validate(&self, proposed: &BTreeMap<RouteId, RouteInput>) -> Result<(), SessionError> {
        let mut seen: std::collections::HashMap<
            (&[String], &str, &portico_proto::BackendUrl),
            RouteId,
        > = std::collections::HashMap::new();
        for (id, r) in proposed {
            let key = (r.domains.as_slice(), r.path.as_str(), &r.backend);
            if let Some(first) = seen.insert(key, *id) {
                return Err(SessionError::Duplicate(*id, first));
            }
        }
        Ok(())
    }

    /// Makes a committed proposal the active set and clears what was staged.
    pub fn commit(&mut self, proposed: BTreeMap<RouteId, RouteInput>, at: SystemTime) {
        self.active = proposed;
        self.staged.clear();
        self.last_apply = Some(at);
    }

    pub fn rollback(&mut self) {
        self.staged.clear();
    }

    /// Routes as they travel to the data planes.
    pub fn to_proto(&self, routes: &BTreeMap<RouteId, RouteInput>) -> Vec<v1::Route> {
        routes
            .iter()
            .map(|(id, r)| v1::Route {
                route_id: id.to_string(),
                session_id: self.identity.id.clone(),
                service: self.identity.service.clone(),
                instance: self.identity.instance.clone(),
                domains: r.domains.clone(),
                path: r.path.clone(),
                backend_url: r.backend.to_string(),
                priority: r.priority,
                settings: None,
            })
            .collect()
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
