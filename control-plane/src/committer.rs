//! The committer: the single writer of the global configuration. Commits are
//! serialised by its mailbox, so each is all-or-nothing and versions are dense.

use actix::prelude::*;
use portico_proto::v1;
use tokio::sync::oneshot;
use tracing::info;

use std::collections::HashMap;

use crate::global::{CommitError, GlobalConfig, SharedConfig};
use crate::history::{Commit, TlsChange};
use crate::publisher::{AckReport, Publish, Publisher};
use crate::store::SessionRecord;
use crate::store::{Batch, Store};
use crate::store::{Fatal, StoreFailed};
use crate::telemetry::Telemetry;
use std::sync::Arc;

/// Why a proposal was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error(transparent)]
    Conflict(#[from] CommitError),
    #[error(transparent)]
    Store(#[from] StoreFailed),
}

pub struct Committer {
    global: SharedConfig,
    publisher: Addr<Publisher>,
    store: Arc<dyn Store>,
    fatal: Fatal,
    telemetry: Telemetry,
    /// The store failed: nothing more is committed while the process stops.
    failed: bool,
    /// Sessions subscribed to global_config_changed.
    subscribers: HashMap<String, Recipient<GlobalChanged>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Committer {
    pub fn new(
        global: SharedConfig,
        publisher: Addr<Publisher>,
        store: Arc<dyn Store>,
        fatal: Fatal,
        telemetry: Telemetry,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Committer {
            global,
            publisher,
            store,
            fatal,
            telemetry,
            failed: false,
            subscribers: HashMap::new(),
            metrics,
        }
    }

    /// Makes a batch durable; false when the store failed. That stops the
    /// control plane (fail-stop, see `Fatal`), and nothing more is committed.
    fn persist(&mut self, mut batch: Batch, commit: Option<&Commit>) -> bool {
        if self.failed {
            return false;
        }
        batch.version = commit.map(|c| c.version);
        if let Err(e) = self.store.commit(batch) {
            self.failed = true;
            self.fatal.raise(e);
            return false;
        }
        true
    }

    /// Applies `change` to the global configuration and makes `batch` (with
    /// the new version) durable, holding the configuration locked across
    /// both: the publisher, which reads it, never sees a version that is not
    /// durable. After a store failure the configuration is marked failed, so
    /// nothing in memory that is not durable is pushed while the process stops.
    fn change(
        &mut self,
        batch: Batch,
        change: impl FnOnce(&mut GlobalConfig) -> Result<Option<Commit>, CommitError>,
    ) -> Result<Option<Commit>, ProposeError> {
        if self.failed {
            return Err(StoreFailed.into());
        }
        let started = std::time::Instant::now();
        let config = self.global.clone();
        let mut global = config.write();
        let commit = change(&mut global)?;
        if !self.persist(batch, commit.as_ref()) {
            global.fail();
            return Err(StoreFailed.into());
        }
        if commit.is_some() {
            self.metrics.commit.observe(started.elapsed().as_secs_f64());
        }
        Ok(commit)
    }

    /// What a change that could not be made durable answers: nothing to wait for.
    fn not_applied() -> Applied {
        Applied {
            version: None,
            acks: None,
        }
    }

    /// Publishes a commit; `proposer` hears of it from its own actor, in order
    /// with its reply, so it is not sent global_config_changed here.
    fn publish(&self, commit: Option<Commit>, proposer: &str) -> Applied {
        let Some(commit) = commit else {
            return Applied {
                version: None,
                acks: None,
            };
        };
        let (done, acks) = oneshot::channel();
        info!(
            version = commit.version,
            upserted = commit.upserted.len(),
            removed = commit.removed.len(),
            "committed"
        );
        for (session, subscriber) in &self.subscribers {
            if session == proposer {
                continue;
            }
            subscriber.do_send(GlobalChanged {
                version: commit.version,
            });
        }
        // Nothing is kept about routes that are gone.
        self.telemetry.forget_routes(&commit.removed);
        let version = commit.version;
        self.publisher.do_send(Publish { commit, done });
        Applied {
            version: Some(version),
            acks: Some(acks),
        }
    }
}

impl Actor for Committer {
    type Context = Context<Self>;
}

/// The outcome of a commit: its version (none when nothing changed) and a
/// receiver that resolves once the data planes have answered.
pub struct Applied {
    pub version: Option<u64>,
    acks: Option<oneshot::Receiver<AckReport>>,
}

impl Applied {
    /// Resolves when every member of the fleet (connected, or disconnected
    /// within the fleet grace) acknowledged or rejected the version, left the
    /// fleet, or the apply timeout passed.
    pub async fn acknowledged(self) -> Option<AckReport> {
        match self.acks {
            Some(rx) => rx.await.ok(),
            None => None,
        }
    }
}

/// The global configuration moved to a new version.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct GlobalChanged {
    pub version: u64,
}

/// Replace a session's active routes, or with `dry_run` only check them.
#[derive(Message)]
#[rtype(result = "Result<Applied, ProposeError>")]
pub struct Propose {
    pub session_id: String,
    pub service: String,
    pub routes: Vec<v1::Route>,
    /// The session as it will be stored once committed.
    pub record: SessionRecord,
    pub dry_run: bool,
}

impl Handler<Propose> for Committer {
    type Result = Result<Applied, ProposeError>;

    fn handle(&mut self, msg: Propose, _: &mut Context<Self>) -> Self::Result {
        if msg.dry_run {
            self.global.read().check(&msg.service, &msg.routes)?;
            return Ok(Self::not_applied());
        }
        let batch = Batch {
            put: vec![msg.record],
            ..Default::default()
        };
        let (session, service, routes) = (&msg.session_id, &msg.service, msg.routes);
        let commit = self.change(batch, |g| g.commit(session, service, routes))?;
        Ok(self.publish(commit, &msg.session_id))
    }
}

/// Remove every route of a session that ended.
#[derive(Message)]
#[rtype(result = "Applied")]
pub struct RemoveSession {
    pub session_id: String,
}

impl Handler<RemoveSession> for Committer {
    type Result = MessageResult<RemoveSession>;

    fn handle(&mut self, msg: RemoveSession, _: &mut Context<Self>) -> Self::Result {
        let batch = Batch {
            delete: vec![msg.session_id.clone()],
            ..Default::default()
        };
        match self.change(batch, |g| Ok(g.remove_session(&msg.session_id))) {
            Ok(commit) => MessageResult(self.publish(commit, &msg.session_id)),
            Err(_) => MessageResult(Self::not_applied()),
        }
    }
}

/// Moves an old session's routes to the session that took it over.
#[derive(Message)]
#[rtype(result = "Applied")]
pub struct TakeOver {
    pub old_session: String,
    pub new_session: String,
    pub service: String,
    pub routes: Vec<v1::Route>,
    pub record: SessionRecord,
}

impl Handler<TakeOver> for Committer {
    type Result = MessageResult<TakeOver>;

    fn handle(&mut self, msg: TakeOver, _: &mut Context<Self>) -> Self::Result {
        self.subscribers.remove(&msg.old_session);
        let batch = Batch {
            put: vec![msg.record],
            delete: vec![msg.old_session.clone()],
            ..Default::default()
        };
        let transfer = |g: &mut GlobalConfig| {
            // The routes were the old session's, so they cannot conflict.
            Ok(
                g.transfer(&msg.old_session, &msg.new_session, &msg.service, msg.routes)
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "take-over conflicted; keeping the old routes");
                        None
                    }),
            )
        };
        match self.change(batch, transfer) {
            Ok(commit) => MessageResult(self.publish(commit, &msg.new_session)),
            Err(_) => MessageResult(Self::not_applied()),
        }
    }
}

/// Installs, replaces or removes certificates and ACME challenges, and
/// stores the ACME account when given.
#[derive(Message)]
#[rtype(result = "Result<Applied, ProposeError>")]
pub struct ChangeTls {
    pub change: TlsChange,
    pub acme_account: Option<Vec<u8>>,
}

impl Handler<ChangeTls> for Committer {
    type Result = Result<Applied, ProposeError>;

    fn handle(&mut self, msg: ChangeTls, _: &mut Context<Self>) -> Self::Result {
        let change = msg.change;
        let batch = Batch {
            certificates_put: change.certificates.clone(),
            certificates_delete: change.certificates_removed.clone(),
            challenges_put: change.challenges.clone(),
            challenges_delete: change.challenges_removed.clone(),
            acme_account: msg.acme_account,
            ..Default::default()
        };
        let commit = self.change(batch, |g| Ok(g.change_tls(change)))?;
        Ok(self.publish(commit, ""))
    }
}

/// Adds (with a recipient) or removes a global_config_changed subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GlobalSubscription {
    pub session_id: String,
    pub recipient: Option<Recipient<GlobalChanged>>,
}

impl Handler<GlobalSubscription> for Committer {
    type Result = ();

    fn handle(&mut self, msg: GlobalSubscription, _: &mut Context<Self>) {
        match msg.recipient {
            Some(r) => {
                self.subscribers.insert(msg.session_id, r);
            }
            None => {
                self.subscribers.remove(&msg.session_id);
            }
        }
    }
}

/// Stores a session that has no routes yet (REGISTER), so it can RECONNECT
/// after a restart; false when the store failed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct SaveSession(pub SessionRecord);

impl Handler<SaveSession> for Committer {
    type Result = bool;

    fn handle(&mut self, msg: SaveSession, _: &mut Context<Self>) -> bool {
        let batch = Batch {
            put: vec![msg.0],
            ..Default::default()
        };
        self.persist(batch, None)
    }
}

/// How many sessions subscribed to global_config_changed, for `/debug/counts`.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct SubscriberCount;

impl Handler<SubscriberCount> for Committer {
    type Result = usize;

    fn handle(&mut self, _: SubscriberCount, _: &mut Context<Self>) -> usize {
        self.subscribers.len()
    }
}
