//! The directory: session id to actor address, route-id allocation, and the
//! arbiters sessions are spread over. Short critical sections, no awaits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use rand::RngCore;

use crate::committer::Committer;
use crate::protocol::RouteId;
use crate::session::{Home, Identity, SessionActor};

/// Settings every session shares.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// How long a session without a home connection keeps serving.
    pub grace: Duration,
}

/// What session actors and connections share.
pub struct Shared {
    pub directory: Directory,
    pub committer: Addr<Committer>,
    pub settings: SessionSettings,
}

pub struct Directory {
    sessions: Mutex<HashMap<String, Addr<SessionActor>>>,
    next_route: AtomicU64,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
}

impl Directory {
    pub fn new(arbiters: Vec<ArbiterHandle>, last_route_id: u64) -> Self {
        assert!(!arbiters.is_empty(), "at least one arbiter");
        Directory {
            sessions: Mutex::new(HashMap::new()),
            next_route: AtomicU64::new(last_route_id),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
        }
    }

    /// Round-robin over the arbiters, so sessions and connections spread over cores.
    pub fn arbiter(&self) -> ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
        self.arbiters[i % self.arbiters.len()].clone()
    }

    pub fn allocate_route(&self) -> RouteId {
        RouteId(self.next_route.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn lookup(&self, id: &str) -> Option<Addr<SessionActor>> {
        self.sessions.lock().get(id).cloned()
    }

    pub fn remove(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Creates a session with a fresh unguessable id and starts its actor.
    pub fn register(shared: &Arc<Shared>, mut identity: Identity, home: Home) -> String {
        let id = new_session_id(&identity.instance);
        identity.id = id.clone();
        let arbiter = shared.directory.arbiter();
        let for_actor = shared.clone();
        let addr = SessionActor::start_in_arbiter(&arbiter, move |_| {
            SessionActor::new(identity, for_actor, home)
        });
        shared.directory.sessions.lock().insert(id.clone(), addr);
        id
    }
}

/// `<instance>-<32 hex digits>`: 128 random bits behind a readable prefix.
fn new_session_id(instance: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let prefix: String = instance.chars().take(32).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_are_long_and_distinct() {
        let a = super::new_session_id("web-1");
        let b = super::new_session_id("web-1");
        assert_ne!(a, b);
        assert!(a.starts_with("web-1-"));
        assert_eq!(a.len(), "web-1-".len() + 32);
    }
}
