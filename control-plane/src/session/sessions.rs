//! Starting and moving session actors: REGISTER (with take-over of the
//! instance's earlier session), sessions restored after a restart, and with
//! replicas the sessions claimed from, or released to, another replica.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rand::RngCore;

use super::actor::{Home, SessionActor, Surrender};
use super::directory::Directory;
use super::env::SessionEnv;
use super::state::{Identity, SessionState};
use crate::config::committer::SaveSession;
use crate::store::{SessionRecord, Store, StoreFailed};

/// How long a take-over waits for the replica running the session to let go.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The sessions of this control plane: the directory that finds them, what
/// their actors are handed, and the store their records live in.
pub struct Sessions {
    pub env: Arc<SessionEnv>,
    pub directory: Arc<Directory>,
    store: Arc<dyn Store>,
}

impl Sessions {
    pub fn new(env: Arc<SessionEnv>, directory: Arc<Directory>, store: Arc<dyn Store>) -> Self {
        Sessions {
            env,
            directory,
            store,
        }
    }

    pub fn lookup(&self, id: &str) -> Option<Addr<SessionActor>> {
        self.directory.lookup(id)
    }

    /// Creates a session with a fresh unguessable id and starts its actor,
    /// kept by the id's key; the id itself is returned for the `ACK` and
    /// kept nowhere. A
    /// live session of the same service and instance is taken over: it ends,
    /// and the new one inherits its active routes and settings (with
    /// replicas, also one that another replica runs, or ran and died). An
    /// error when the store cannot keep the new session.
    pub async fn register(
        &self,
        mut identity: Identity,
        home: Home,
    ) -> Result<String, StoreFailed> {
        let secret = new_session_id(&identity.instance);
        let id = super::key::session_key(&secret);
        identity.id = id.clone();
        let key = (identity.service.clone(), identity.instance.clone());
        if !self.directory.has_instance(&key.0, &key.1) {
            if let Some(old) = self.directory.stored_instance(&key) {
                // Brought here first, then taken over as a local one is.
                if let Err(e) = self.claim(&old).await {
                    tracing::warn!(session = %super::key::handle(&key.1, &old), error = %e, "cannot take over this instance's session from another replica");
                }
            }
        }
        let inherited = match self.directory.claim_instance(key.clone(), &id) {
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
            let saved = match self.env.committer.send(SaveSession(record)).await {
                Ok(saved) => saved,
                Err(_) => Err(StoreFailed::Failed),
            };
            if let Err(e) = saved {
                self.directory.forget_instance(&key);
                return Err(e);
            }
        }
        let env = self.env.clone();
        let addr = SessionActor::start_in_arbiter(&self.directory.arbiter(), move |_| {
            SessionActor::new(identity, env, home, inherited)
        });
        self.directory.insert_claimed(id, addr);
        Ok(secret)
    }

    /// Starts the sessions this replica took over in a shared store (from a
    /// replica that died, or for a `RECONNECT` here), detached with `grace`.
    /// `orphaned`: taken from a replica gone with no client told, so each
    /// says its staged changes were lost before it applies (docs/HA.md).
    pub fn adopt(&self, records: Vec<SessionRecord>, grace: Duration, orphaned: bool) {
        for record in records {
            if self.directory.lookup(&record.id).is_some() || super::key::is_site(&record.id) {
                continue;
            }
            match record.restore() {
                Ok(state) => {
                    tracing::info!(session = %record.handle(), service = %record.service, "session taken over from another replica");
                    self.restore(state, grace, orphaned);
                }
                Err(e) => {
                    tracing::error!(session = %record.handle(), error = %e, "a session to take over cannot be read")
                }
            }
        }
    }

    /// A `RECONNECT` here for a session this replica does not run: with a
    /// shared store, it takes the session over from whichever replica ran
    /// it (which lets it go once it sees that), detached until the
    /// `RECONNECT` attaches it. `None` when there is no such session.
    pub async fn claim(&self, id: &str) -> Result<Option<Addr<SessionActor>>, StoreFailed> {
        Ok(self.claim_from(id, None).await?.0)
    }

    /// Takes session `id` over from replica `from` (which failed while a
    /// command for it was relayed there), unless it moved elsewhere since;
    /// from any replica with `None`. With the actor, whether the replica
    /// holding it was asked to let go (its staged changes went with it,
    /// even if the session then moved elsewhere).
    pub async fn claim_from(
        &self,
        id: &str,
        from: Option<&str>,
    ) -> Result<(Option<Addr<SessionActor>>, bool), StoreFailed> {
        let store = self.store.clone();
        if store.replica_id().is_empty() {
            return Ok((None, false));
        }
        // A live holder lets go first, so no actor of it lingers beside
        // the one started here (one gone does not answer, and is not waited for).
        let holder = self.stored_replica(id).await?;
        let mut released = false;
        if let Some(holder) = holder.filter(|h| !h.is_empty() && h != store.replica_id()) {
            if from.is_some_and(|from| from != holder) {
                // It moved on already: not ours to take.
                return Ok((None, false));
            }
            let peers = &self.env.planes.peers;
            if !peers.release(&holder, id, RELEASE_WAIT).await {
                tracing::debug!(replica = %holder, "the session's replica did not answer; taking the session over");
            }
            released = true;
        }
        let (key, from) = (id.to_string(), from.map(str::to_string));
        let claimed =
            actix_rt::task::spawn_blocking(move || store.claim_session(&key, from.as_deref()))
                .await
                .map_err(|_| StoreFailed::Unavailable)?;
        match claimed {
            Ok(Some(record)) => {
                self.adopt(vec![record], self.env.settings.grace, false);
                Ok((self.directory.lookup(id), released))
            }
            Ok(None) => Ok((None, released)),
            Err(e) => {
                tracing::warn!(session = %super::key::fingerprint(id), error = %e, "cannot take the session over");
                Err(StoreFailed::Unavailable)
            }
        }
    }

    /// The store says another replica runs session `id` now, or that it
    /// ended there (asked again, as the watch may show an older write):
    /// its actor here stops and leaves its routes to that replica.
    pub async fn release_if_moved(self: Arc<Self>, id: String) {
        if self.directory.lookup(&id).is_none() {
            return;
        }
        let store = self.store.clone();
        let key = id.clone();
        let holder = actix_rt::task::spawn_blocking(move || store.session_replica(&key)).await;
        let here = self.store.replica_id();
        match holder {
            Ok(Ok(Some(replica))) if replica == here => {}
            Ok(Ok(_)) => {
                if let Some(addr) = self.directory.take(&id) {
                    tracing::info!(session = %super::key::fingerprint(&id), "session moved to another replica");
                    addr.do_send(Surrender);
                }
            }
            _ => {
                tracing::warn!(session = %super::key::fingerprint(&id), "cannot tell which replica runs the session; keeping it")
            }
        }
    }

    /// Where session `id` runs, read from the store now (a record the
    /// watch has not shown here yet); `None` without a record.
    pub async fn stored_replica(&self, id: &str) -> Result<Option<String>, StoreFailed> {
        let (store, key) = (self.store.clone(), id.to_string());
        match actix_rt::task::spawn_blocking(move || store.session_replica(&key)).await {
            Ok(Ok(replica)) => Ok(replica),
            _ => Err(StoreFailed::Unavailable),
        }
    }

    /// This replica's id (empty with a store of one's own).
    pub fn replica_id(&self) -> &str {
        self.store.replica_id()
    }

    /// Starts a session restored from the store, detached with `grace`.
    pub fn restore(&self, state: SessionState, grace: Duration, staged_lost: bool) {
        let id = state.identity.id.clone();
        let key = (
            state.identity.service.clone(),
            state.identity.instance.clone(),
        );
        let (env, arbiter) = (self.env.clone(), self.directory.arbiter());
        self.directory.insert_new(id, key, move || {
            SessionActor::start_in_arbiter(&arbiter, move |_| {
                SessionActor::restored(state, env, grace).staged_lost(staged_lost)
            })
        });
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
