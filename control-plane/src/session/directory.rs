//! The directory: session id to actor address, route-id allocation, the
//! arbiters sessions are spread over, and starting session actors. Short
//! critical sections, no awaits under a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use rand::RngCore;

use super::{Home, Identity, SessionActor, SessionState, Shared, Surrender};
use crate::config::committer::SaveSession;
use crate::protocol::RouteId;
use crate::store::{Fatal, SessionRecord, Store, StoreFailed};

/// Route ids reserved in the store at a time.
const ROUTE_RESERVATION: u64 = 1024;

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Addr<SessionActor>>,
    /// (service, instance) -> session id, for take-over.
    by_instance: HashMap<(String, String), String>,
}

/// With a shared store: the session of each service instance, whichever
/// replica runs it (from the stored records, kept up by the watch), so a
/// REGISTER here can take over a session another replica runs.
#[derive(Default)]
struct Stored {
    by_instance: HashMap<(String, String), String>,
    by_id: HashMap<String, (String, String)>,
}

pub struct Directory {
    sessions: Mutex<Sessions>,
    stored: Mutex<Stored>,
    next_route: AtomicU64,
    /// Route ids up to this are reserved in the store, so none is ever
    /// reused after a restart, even one that was only staged.
    route_reserved: Mutex<u64>,
    store: Arc<dyn Store>,
    fatal: Fatal,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
}

impl Directory {
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        route_reserved: u64,
        store: Arc<dyn Store>,
        fatal: Fatal,
    ) -> Self {
        assert!(!arbiters.is_empty(), "at least one arbiter");
        Directory {
            sessions: Mutex::new(Sessions::default()),
            stored: Mutex::new(Stored::default()),
            next_route: AtomicU64::new(route_reserved),
            route_reserved: Mutex::new(route_reserved),
            store,
            fatal,
            arbiters,
            next_arbiter: AtomicUsize::new(0),
        }
    }

    /// Round-robin over the arbiters, so sessions and connections spread over cores.
    pub fn arbiter(&self) -> ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
        self.arbiters[i % self.arbiters.len()].clone()
    }

    /// A route id never handed out before, also across restarts and by
    /// other replicas; an error when the store cannot reserve more (the
    /// control plane stops unless the store is only unavailable).
    pub fn allocate_route(&self) -> Result<RouteId, StoreFailed> {
        let mut reserved = self.route_reserved.lock();
        let mut id = self.next_route.load(Ordering::Relaxed) + 1;
        if id > *reserved {
            match self.store.reserve_routes(id, ROUTE_RESERVATION) {
                Ok(first) => {
                    id = first;
                    *reserved = first + ROUTE_RESERVATION - 1;
                }
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "cannot reserve route ids: the state store is unavailable");
                    return Err(StoreFailed::Unavailable);
                }
                Err(e) => {
                    self.fatal.raise(e);
                    return Err(StoreFailed::Failed);
                }
            }
        }
        self.next_route.store(id, Ordering::Relaxed);
        Ok(RouteId(id))
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
        let key = (record.service.clone(), record.instance.clone());
        let mut stored = self.stored.lock();
        stored.by_instance.insert(key.clone(), record.id.clone());
        stored.by_id.insert(record.id.clone(), key);
    }

    /// A session record deleted (shared store).
    pub fn stored_gone(&self, id: &str) {
        let mut stored = self.stored.lock();
        if let Some(key) = stored.by_id.remove(id) {
            if stored
                .by_instance
                .get(&key)
                .is_some_and(|owner| owner == id)
            {
                stored.by_instance.remove(&key);
            }
        }
    }

    /// Creates a session with a fresh unguessable id and starts its actor. A
    /// live session of the same service and instance is taken over: it ends,
    /// and the new one inherits its active routes and settings (with
    /// replicas, also one that another replica runs, or ran and died). An
    /// error when the store cannot keep the new session.
    pub async fn register(
        shared: &Arc<Shared>,
        mut identity: Identity,
        home: Home,
    ) -> Result<String, StoreFailed> {
        let id = new_session_id(&identity.instance);
        identity.id = id.clone();
        let key = (identity.service.clone(), identity.instance.clone());
        if !shared.directory.has_instance(&key.0, &key.1) {
            let elsewhere = shared
                .directory
                .stored
                .lock()
                .by_instance
                .get(&key)
                .cloned();
            if let Some(old) = elsewhere {
                // Brought here first, then taken over as a local one is.
                if let Err(e) = Directory::claim(shared, &old).await {
                    tracing::warn!(session = %old, error = %e, "cannot take over this instance's session from another replica");
                }
            }
        }
        let previous = {
            let mut sessions = shared.directory.sessions.lock();
            let old = sessions.by_instance.insert(key.clone(), id.clone());
            old.and_then(|old| sessions.by_id.remove(&old).map(|addr| (old, addr)))
        };
        let inherited = match previous {
            Some((old_id, addr)) => addr
                .send(Surrender)
                .await
                .ok()
                .flatten()
                .map(|i| (old_id, i)),
            None => None,
        };
        if inherited.is_none() {
            // A new session is durable before its ACK, so it can RECONNECT
            // after a restart (a take-over is stored by its commit).
            let record = SessionState::new(identity.clone()).record();
            let saved = match shared.committer.send(SaveSession(record)).await {
                Ok(saved) => saved,
                Err(_) => Err(StoreFailed::Failed),
            };
            if let Err(e) = saved {
                shared.directory.sessions.lock().by_instance.remove(&key);
                return Err(e);
            }
        }
        let arbiter = shared.directory.arbiter();
        let for_actor = shared.clone();
        let addr = SessionActor::start_in_arbiter(&arbiter, move |_| {
            SessionActor::new(identity, for_actor, home, inherited)
        });
        shared
            .directory
            .sessions
            .lock()
            .by_id
            .insert(id.clone(), addr);
        Ok(id)
    }

    /// Starts the sessions this replica took over in a shared store (from a
    /// replica that died, or for a `RECONNECT` here), detached with `grace`.
    pub fn adopt(shared: &Arc<Shared>, records: Vec<SessionRecord>, grace: Duration) {
        for record in records {
            if shared.directory.lookup(&record.id).is_some() {
                continue;
            }
            match record.restore() {
                Ok(state) => {
                    tracing::info!(session = %record.id, service = %record.service, "session taken over from another replica");
                    Directory::restore(shared, state, grace);
                }
                Err(e) => {
                    tracing::error!(session = %record.id, error = %e, "a session to take over cannot be read")
                }
            }
        }
    }

    /// A `RECONNECT` here for a session this replica does not run: with a
    /// shared store, it takes the session over from whichever replica ran
    /// it (which lets it go once it sees that), detached until the
    /// `RECONNECT` attaches it. `None` when there is no such session.
    pub async fn claim(
        shared: &Arc<Shared>,
        id: &str,
    ) -> Result<Option<Addr<SessionActor>>, StoreFailed> {
        let store = shared.directory.store.clone();
        if store.replica_id().is_empty() {
            return Ok(None);
        }
        let key = id.to_string();
        let claimed = actix_rt::task::spawn_blocking(move || store.claim_session(&key))
            .await
            .map_err(|_| StoreFailed::Unavailable)?;
        match claimed {
            Ok(Some(record)) => {
                Directory::adopt(shared, vec![record], shared.settings.grace);
                Ok(shared.directory.lookup(id))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "cannot take the session over");
                Err(StoreFailed::Unavailable)
            }
        }
    }

    /// The store says another replica runs session `id` now, or that it
    /// ended there (asked again, as the watch may show an older write):
    /// its actor here stops and leaves its routes to that replica.
    pub async fn release_if_moved(shared: Arc<Shared>, id: String) {
        if shared.directory.lookup(&id).is_none() {
            return;
        }
        let store = shared.directory.store.clone();
        let key = id.clone();
        let holder = actix_rt::task::spawn_blocking(move || store.session_replica(&key)).await;
        let here = shared.directory.store.replica_id();
        match holder {
            Ok(Ok(Some(replica))) if replica == here => {}
            Ok(Ok(_)) => shared.directory.release(&id),
            _ => {
                tracing::warn!(session = %id, "cannot tell which replica runs the session; keeping it")
            }
        }
    }

    /// Another replica runs the session now (or it ended there): its actor
    /// here stops and leaves its routes to that replica.
    fn release(&self, id: &str) {
        let addr = {
            let mut sessions = self.sessions.lock();
            let Some(addr) = sessions.by_id.remove(id) else {
                return;
            };
            sessions.by_instance.retain(|_, owner| owner != id);
            addr
        };
        tracing::info!(session = %id, "session moved to another replica");
        addr.do_send(Surrender);
    }

    /// Starts a session restored from the store, detached with `grace`.
    pub fn restore(shared: &Arc<Shared>, state: SessionState, grace: Duration) {
        let id = state.identity.id.clone();
        let key = (
            state.identity.service.clone(),
            state.identity.instance.clone(),
        );
        let arbiter = shared.directory.arbiter();
        let for_actor = shared.clone();
        let addr = SessionActor::start_in_arbiter(&arbiter, move |_| {
            SessionActor::restored(state, for_actor, grace)
        });
        let mut sessions = shared.directory.sessions.lock();
        sessions.by_instance.insert(key, id.clone());
        sessions.by_id.insert(id, addr);
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
