//! The committer: the single writer of the global configuration. Commits are
//! serialised by its mailbox, so each is all-or-nothing and versions are dense.

use actix::prelude::*;
use portico_proto::RouteSpec;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use std::collections::HashMap;

use crate::config::global::{CommitError, GlobalConfig, SharedConfig};
use crate::config::history::{Commit, TlsChange};
use crate::observe::telemetry::Telemetry;
use crate::planes::publisher::{AckReport, Publish, Publisher};
use crate::store::{Batch, Fatal, Observed, SessionRecord, Store, StoreError, StoreFailed};
use std::sync::Arc;

/// Why a proposal was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error(transparent)]
    Conflict(#[from] CommitError),
    #[error(transparent)]
    Store(#[from] StoreFailed),
}

/// Commits retried after another replica's (each on its state) before the
/// store counts as unavailable.
const MAX_ATTEMPTS: usize = 32;
/// How soon a replica that could not read the shared store tries again.
const RESYNC_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// A stored session as the global configuration holds it; `None` (logged)
/// for a record this build cannot read.
fn routes_of(record: &SessionRecord) -> Option<(String, String, Vec<RouteSpec>)> {
    match record.active_routes() {
        Ok(routes) => Some((record.id.clone(), record.service.clone(), routes)),
        Err(e) => {
            error!(session = %record.handle(), error = %e, "a stored session cannot be read; its routes are left out");
            None
        }
    }
}

pub struct Committer {
    pub(crate) global: SharedConfig,
    publisher: Addr<Publisher>,
    store: Arc<dyn Store>,
    fatal: Fatal,
    telemetry: Telemetry,
    /// The store failed: nothing more is committed while the process stops.
    failed: bool,
    /// Sessions subscribed to global_config_changed.
    subscribers: HashMap<String, Recipient<GlobalChanged>>,
    metrics: Arc<crate::observe::metrics::Metrics>,
}

impl Committer {
    pub fn new(
        global: SharedConfig,
        publisher: Addr<Publisher>,
        store: Arc<dyn Store>,
        fatal: Fatal,
        telemetry: Telemetry,
        metrics: Arc<crate::observe::metrics::Metrics>,
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

    /// Makes a batch without a new version durable (a session's record).
    fn persist(&mut self, batch: &mut Batch) -> Result<(), StoreFailed> {
        if self.failed {
            return Err(StoreFailed::Failed);
        }
        self.stamp(batch);
        let config = self.global.clone();
        self.store
            .commit(batch)
            .map_err(|e| self.store_failed(e, &mut config.write()))
    }

    /// Sessions written here run here: other replicas leave them alone.
    fn stamp(&self, batch: &mut Batch) {
        let sessions = batch.put.iter_mut();
        for record in sessions.filter(|r| !crate::session::key::is_site(&r.id)) {
            record.replica = self.store.replica_id().to_string();
        }
    }

    /// What a store error means here: a shared store that did not answer
    /// changed nothing; anything else stops the control plane (fail-stop,
    /// see `Fatal`), and nothing more is committed meanwhile.
    fn store_failed(&mut self, error: StoreError, global: &mut GlobalConfig) -> StoreFailed {
        if matches!(error, StoreError::Moved) {
            debug!("a session's change refused: another replica took it over");
            return StoreFailed::Moved;
        }
        if error.is_unavailable() {
            warn!(%error, "the state store is unavailable");
            return StoreFailed::Unavailable;
        }
        self.failed = true;
        global.fail();
        self.fatal.raise(error);
        StoreFailed::Failed
    }

    /// Makes `batch` durable with the version `plan` calls for (a new one
    /// when it returns true), then applies `change` to the global
    /// configuration, holding it locked across both: the publisher, which
    /// reads it, never sees a version that is not durable, and a change the
    /// store refused leaves nothing behind. When another replica committed
    /// first, its versions are taken in and `plan` runs again on them (and
    /// may rewrite the data and the batch to fit them, as a site's does).
    pub(crate) fn change<D>(
        &mut self,
        mut batch: Batch,
        mut data: D,
        mut plan: impl FnMut(&GlobalConfig, &mut D, &mut Batch) -> Result<bool, ProposeError>,
        change: impl FnOnce(&mut GlobalConfig, D) -> Result<Option<Commit>, CommitError>,
    ) -> Result<Option<Commit>, ProposeError> {
        if self.failed {
            return Err(StoreFailed::Failed.into());
        }
        let started = std::time::Instant::now();
        let config = self.global.clone();
        let mut global = config.write();
        let mut attempts = 0;
        loop {
            let new_version = plan(&global, &mut data, &mut batch)?;
            self.stamp(&mut batch);
            batch.version = new_version.then(|| global.version() + 1);
            match self.store.commit(&batch) {
                Ok(()) => break,
                Err(StoreError::Conflict { expected, found }) if attempts < MAX_ATTEMPTS => {
                    attempts += 1;
                    debug!(
                        expected,
                        found, "another replica committed first; taking its versions in"
                    );
                    let taken = match self.resync(&mut global) {
                        Ok(taken) => taken,
                        Err(e) => return Err(self.store_failed(e, &mut global).into()),
                    };
                    self.publish(taken, "");
                }
                Err(e) => return Err(self.store_failed(e, &mut global).into()),
            }
        }
        let commit = change(&mut global, data)?;
        if commit.as_ref().map(|c| c.version) != batch.version {
            // The plan and the change disagree: memory and store differ.
            error!(planned = ?batch.version, "a commit changed other than planned");
            self.failed = true;
            global.fail();
            self.fatal.raise(StoreError::Diverged);
            return Err(StoreFailed::Failed.into());
        }
        if commit.is_some() {
            self.metrics.commit.observe(started.elapsed().as_secs_f64());
        }
        Ok(commit)
    }

    /// Brings the configuration to what the store holds now: one commit of
    /// what other replicas changed.
    fn resync(&self, global: &mut GlobalConfig) -> Result<Option<Commit>, StoreError> {
        let loaded = self.store.load()?;
        let sessions = loaded.sessions.iter().filter_map(routes_of).collect();
        let commit = global.resync(
            loaded.version,
            sessions,
            loaded.certificates,
            loaded.challenges,
        );
        if let Some(c) = &commit {
            info!(
                version = c.version,
                from = c.base,
                "taken in the versions of other replicas"
            );
        }
        Ok(commit)
    }

    /// What a change that could not be made durable answers: nothing to wait for.
    pub(crate) fn not_applied() -> Applied {
        Applied {
            version: None,
            acks: None,
        }
    }

    /// Publishes a commit; `proposer` hears of it from its own actor, in order
    /// with its reply, so it is not sent global_config_changed here.
    pub(crate) fn publish(&self, commit: Option<Commit>, proposer: &str) -> Applied {
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
    /// The session's key (never its id).
    pub session_key: String,
    pub service: String,
    pub routes: Vec<RouteSpec>,
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
        let (session, service, routes) = (&msg.session_key, &msg.service, msg.routes);
        let plan = |g: &GlobalConfig, routes: &mut Vec<RouteSpec>, _: &mut Batch| {
            g.check(service, routes)?;
            Ok(g.changes(session, routes))
        };
        // Checked by the plan, against the same state, under the same lock.
        let apply = |g: &mut GlobalConfig, routes| Ok(g.apply(session, service, routes));
        let commit = self.change(batch, routes, plan, apply)?;
        Ok(self.publish(commit, &msg.session_key))
    }
}

/// Remove every route of a session that ended.
#[derive(Message)]
#[rtype(result = "Applied")]
pub struct RemoveSession {
    pub session_key: String,
}

impl Handler<RemoveSession> for Committer {
    type Result = MessageResult<RemoveSession>;

    fn handle(&mut self, msg: RemoveSession, ctx: &mut Context<Self>) -> Self::Result {
        let batch = Batch {
            delete: vec![msg.session_key.clone()],
            ..Default::default()
        };
        let id = &msg.session_key;
        let plan = |g: &GlobalConfig, _: &mut (), _: &mut Batch| Ok(g.changes(id, &[]));
        match self.change(batch, (), plan, |g, _| Ok(g.remove_session(id))) {
            Ok(commit) => MessageResult(self.publish(commit, &msg.session_key)),
            Err(e) => {
                if matches!(e, ProposeError::Store(StoreFailed::Unavailable)) {
                    // The session ended: its routes go once the store answers.
                    ctx.notify_later(msg, RESYNC_RETRY);
                }
                MessageResult(Self::not_applied())
            }
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
    pub routes: Vec<RouteSpec>,
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
        let (old, new, service) = (&msg.old_session, &msg.new_session, &msg.service);
        // The routes were the old session's, so they cannot conflict.
        let transfer = |g: &mut GlobalConfig, routes| g.transfer(old, new, service, routes);
        let plan = |g: &GlobalConfig, routes: &mut Vec<RouteSpec>, _: &mut Batch| {
            Ok(g.changes(old, routes))
        };
        match self.change(batch, msg.routes, plan, transfer) {
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
        let plan = |g: &GlobalConfig, c: &mut TlsChange, _: &mut Batch| {
            Ok(!g.effective_tls(c.clone()).is_empty())
        };
        let commit = self.change(batch, change, plan, |g, c| Ok(g.change_tls(c)))?;
        Ok(self.publish(commit, ""))
    }
}

/// Adds (with a recipient) or removes a global_config_changed subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GlobalSubscription {
    pub session_key: String,
    pub recipient: Option<Recipient<GlobalChanged>>,
}

impl Handler<GlobalSubscription> for Committer {
    type Result = ();

    fn handle(&mut self, msg: GlobalSubscription, _: &mut Context<Self>) {
        match msg.recipient {
            Some(r) => {
                self.subscribers.insert(msg.session_key, r);
            }
            None => {
                self.subscribers.remove(&msg.session_key);
            }
        }
    }
}

/// Stores a session's record without a new version: a new session (REGISTER),
/// so it can RECONNECT after a restart, and new subscriptions.
#[derive(Message)]
#[rtype(result = "Result<(), StoreFailed>")]
pub struct SaveSession(pub SessionRecord);

impl Handler<SaveSession> for Committer {
    type Result = Result<(), StoreFailed>;

    fn handle(&mut self, msg: SaveSession, _: &mut Context<Self>) -> Self::Result {
        let mut batch = Batch {
            put: vec![msg.0],
            ..Default::default()
        };
        self.persist(&mut batch)
    }
}

/// What a replica wrote to the shared store, as the watch saw it (this
/// replica's own commits come back too, and are skipped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Followed(pub Observed);

impl Handler<Followed> for Committer {
    type Result = ();

    fn handle(&mut self, msg: Followed, ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        let config = self.global.clone();
        let mut global = config.write();
        let current = global.version();
        let taken = match msg.0 {
            // This replica's own commits, and writes that change no version.
            Observed::Write(batch) if batch.version.is_none_or(|v| v <= current) => return,
            Observed::Write(batch) if batch.version == Some(current + 1) => {
                let batch = *batch;
                let version = current + 1;
                let sessions = batch.put.iter().filter_map(routes_of).collect();
                let tls = TlsChange {
                    certificates: batch.certificates_put,
                    certificates_removed: batch.certificates_delete,
                    challenges: batch.challenges_put,
                    challenges_removed: batch.challenges_delete,
                };
                self.store.observed(version);
                global.follow(version, sessions, batch.delete, tls)
            }
            Observed::ReplicaGone(_) => return,
            Observed::Write(_) | Observed::Missed => match self.resync(&mut global) {
                Ok(taken) => taken,
                Err(error) => {
                    warn!(%error, "cannot read the state store to follow it; trying again");
                    ctx.notify_later(Followed(Observed::Missed), RESYNC_RETRY);
                    return;
                }
            },
        };
        drop(global);
        if let Some(commit) = &taken {
            debug!(
                version = commit.version,
                "followed another replica's commit"
            );
        }
        self.publish(taken, "");
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
