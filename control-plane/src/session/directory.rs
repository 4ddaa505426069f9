//! The directory: session id to actor address, each service instance's
//! session (here, and with replicas as stored), and the arbiters sessions
//! are spread over. Short critical sections, no awaits under a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;
use parking_lot::Mutex;

use super::actor::SessionActor;
use super::state::Identity;
use crate::store::SessionRecord;

/// (service, instance)
type InstanceKey = (String, String);

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Addr<SessionActor>>,
    /// (service, instance) -> session id, for take-over.
    by_instance: HashMap<(String, String), String>,
}

/// With a shared store: the session of each service instance, and the
/// replica running each session (from the stored records, kept up by the
/// watch), so a REGISTER here can take over a session another replica
/// runs, and a command for it can be relayed there.
#[derive(Default)]
struct Stored {
    by_instance: HashMap<(String, String), String>,
    by_id: HashMap<String, StoredSession>,
}

/// A session another replica runs, as stored.
pub struct StoredElsewhere {
    pub id: String,
    pub service: String,
    pub instance: String,
    pub replica: String,
}

struct StoredSession {
    key: InstanceKey,
    replica: String,
}

pub struct Directory {
    sessions: Mutex<Sessions>,
    stored: Mutex<Stored>,
    /// Sessions let go to another replica whose actor has not stopped yet:
    /// none is started again here meanwhile (two actors would diverge).
    releasing: Mutex<std::collections::HashSet<String>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
}

impl Directory {
    pub fn new(arbiters: Vec<ArbiterHandle>) -> Self {
        assert!(!arbiters.is_empty(), "at least one arbiter");
        Directory {
            sessions: Mutex::new(Sessions::default()),
            stored: Mutex::new(Stored::default()),
            releasing: Mutex::default(),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
        }
    }

    /// Round-robin over the arbiters, so sessions and connections spread over cores.
    pub fn arbiter(&self) -> ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
        self.arbiters[i % self.arbiters.len()].clone()
    }

    pub fn lookup(&self, id: &str) -> Option<Addr<SessionActor>> {
        self.sessions.lock().by_id.get(id).cloned()
    }

    /// Forgets a session that ended (its instance slot too, if still its own).
    pub fn remove(&self, id: &str, identity: &Identity) {
        let mut sessions = self.sessions.lock();
        sessions.by_id.remove(id);
        let key = (identity.service.clone(), identity.instance.clone());
        if sessions
            .by_instance
            .get(&key)
            .is_some_and(|owner| owner == id)
        {
            sessions.by_instance.remove(&key);
        }
    }

    /// The arbiters sessions and connections run on.
    pub fn arbiters(&self) -> &[ArbiterHandle] {
        &self.arbiters
    }

    /// (sessions, service-and-instance slots), for `/debug/counts`.
    pub fn counts(&self) -> (usize, usize) {
        let sessions = self.sessions.lock();
        (sessions.by_id.len(), sessions.by_instance.len())
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.lock().by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().by_id.len()
    }

    pub fn all(&self) -> Vec<Addr<SessionActor>> {
        self.sessions.lock().by_id.values().cloned().collect()
    }

    /// A session of this service instance exists (a REGISTER would take it over).
    pub fn has_instance(&self, service: &str, instance: &str) -> bool {
        self.sessions
            .lock()
            .by_instance
            .contains_key(&(service.to_string(), instance.to_string()))
    }

    /// A session record as stored now (shared store).
    pub fn stored(&self, record: &SessionRecord) {
        if super::key::is_site(&record.id) {
            return;
        }
        let key = (record.service.clone(), record.instance.clone());
        let mut stored = self.stored.lock();
        stored.by_instance.insert(key.clone(), record.id.clone());
        let replica = record.replica.clone();
        stored
            .by_id
            .insert(record.id.clone(), StoredSession { key, replica });
    }

    /// The sessions stored as run by another replica (shared store).
    pub fn stored_elsewhere(&self) -> Vec<StoredElsewhere> {
        let here = self.sessions.lock();
        let stored = self.stored.lock();
        let mut elsewhere: Vec<StoredElsewhere> = stored
            .by_id
            .iter()
            .filter(|(id, _)| !here.by_id.contains_key(*id))
            .map(|(id, s)| StoredElsewhere {
                id: id.clone(),
                service: s.key.0.clone(),
                instance: s.key.1.clone(),
                replica: s.replica.clone(),
            })
            .collect();
        elsewhere.sort_by(|a, b| a.id.cmp(&b.id));
        elsewhere
    }

    /// The replica running session `id` as last stored (shared store).
    pub fn stored_replica(&self, id: &str) -> Option<String> {
        let stored = self.stored.lock();
        stored.by_id.get(id).map(|s| s.replica.clone())
    }

    /// A session record deleted (shared store).
    pub fn stored_gone(&self, id: &str) {
        let mut stored = self.stored.lock();
        if let Some(StoredSession { key, .. }) = stored.by_id.remove(id) {
            if stored
                .by_instance
                .get(&key)
                .is_some_and(|owner| owner == id)
            {
                stored.by_instance.remove(&key);
            }
        }
    }

    /// The session of this service instance with a shared store, whichever
    /// replica runs it.
    pub fn stored_instance(&self, key: &InstanceKey) -> Option<String> {
        self.stored.lock().by_instance.get(key).cloned()
    }

    /// Makes `id` the instance's session; the session it replaces, if it
    /// ran here, leaves the directory and is returned with its address.
    pub fn claim_instance(
        &self,
        key: InstanceKey,
        id: &str,
    ) -> Option<(String, Addr<SessionActor>)> {
        let mut sessions = self.sessions.lock();
        let old = sessions.by_instance.insert(key, id.to_string());
        old.and_then(|old| sessions.by_id.remove(&old).map(|addr| (old, addr)))
    }

    /// Undoes `claim_instance` for a session that could not be kept.
    pub fn forget_instance(&self, key: &InstanceKey) {
        self.sessions.lock().by_instance.remove(key);
    }

    /// Starts session `id` with `start` and adds it (making it its
    /// instance's), unless it is here already: checked and added under one
    /// lock, so two take-overs racing on this replica start one actor.
    pub fn insert_new(
        &self,
        id: String,
        key: InstanceKey,
        start: impl FnOnce() -> Addr<SessionActor>,
    ) -> bool {
        let mut sessions = self.sessions.lock();
        if sessions.by_id.contains_key(&id) {
            return false;
        }
        let addr = start();
        sessions.by_instance.insert(key, id.clone());
        sessions.by_id.insert(id, addr);
        true
    }

    /// Adds a started session whose instance slot was claimed already.
    pub fn insert_claimed(&self, id: String, addr: Addr<SessionActor>) {
        self.sessions.lock().by_id.insert(id, addr);
    }

    /// Takes a session out to let it go to another replica; until
    /// `released`, `releasing` says so.
    pub fn take_for_release(&self, id: &str) -> Option<Addr<SessionActor>> {
        let addr = self.take(id)?;
        self.releasing.lock().insert(id.to_string());
        Some(addr)
    }

    /// The actor of a session let go has stopped.
    pub fn released(&self, id: &str) {
        self.releasing.lock().remove(id);
    }

    /// Session `id` is being let go: its actor here may still be running.
    pub fn releasing(&self, id: &str) -> bool {
        self.releasing.lock().contains(id)
    }

    /// Takes a session out that now runs elsewhere: its address, to stop it.
    pub fn take(&self, id: &str) -> Option<Addr<SessionActor>> {
        let mut sessions = self.sessions.lock();
        let addr = sessions.by_id.remove(id)?;
        sessions.by_instance.retain(|_, owner| owner != id);
        Some(addr)
    }
}
