//! The publisher actor: sends every committed version to the fleet, keeps
//! the fleet's membership in the store, releases `CONFIG_APPLY` waiters and
//! tells operators what happened. The logic lives in `history` and `fleet`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The runtime's clock, so the fleet grace follows a paused clock in tests.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

use actix::prelude::*;
use portico_proto::time::unix_ms;
use portico_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::global::SharedConfig;
use crate::config::history;
use crate::config::history::Commit;
use crate::planes::fleet::{Fleet, MemberState, StreamEnd};
use crate::store::{Batch, MemberRecord, Store};

pub use crate::planes::fleet::{AckReport, PushSender};

pub struct Publisher {
    apply_timeout: Duration,
    /// The routes and the version: read here, written by the committer.
    config: SharedConfig,
    fleet: Fleet,
    store: Arc<dyn Store>,
    /// Operators' WatchConfig streams.
    watchers: Vec<mpsc::UnboundedSender<Result<v1::WatchEvent, tonic::Status>>>,
    next_test: u64,
    /// BACKEND_TEST requests waiting for a data plane: id -> (conn, reply).
    tests: HashMap<u64, (u64, oneshot::Sender<v1::BackendTestResult>)>,
    /// Breaker resets waiting for data planes: (route id, streams not yet
    /// done, reply).
    resets: Vec<(String, HashSet<u64>, oneshot::Sender<()>)>,
    /// The pending expiry check, replaced when an earlier one is needed.
    expiry: Option<(Instant, SpawnHandle)>,
    /// What `--global` sets for every route, told to every plane before
    /// its first push and again on every change.
    defaults: v1::Defaults,
}

impl Publisher {
    /// Publishes what the committer commits to `config`, to the stored
    /// fleet `members` and every data plane that connects.
    pub fn new(
        apply_timeout: Duration,
        fleet_grace: Duration,
        config: SharedConfig,
        members: Vec<MemberRecord>,
        store: Arc<dyn Store>,
    ) -> Self {
        let mut fleet = match store.replica_id() {
            "" => Fleet::new(fleet_grace),
            replica => Fleet::shared(fleet_grace, replica),
        };
        fleet.restore(members, now());
        Publisher {
            apply_timeout,
            config,
            fleet,
            store,
            watchers: Vec::new(),
            next_test: 0,
            tests: HashMap::new(),
            resets: Vec::new(),
            expiry: None,
            defaults: v1::Defaults::default(),
        }
    }

    fn notify(&mut self, event: v1::watch_event::Event) {
        let event = v1::WatchEvent { event: Some(event) };
        self.watchers.retain(|w| w.send(Ok(event.clone())).is_ok());
    }

    fn member_changed(&mut self, node_id: String, state: MemberState) {
        self.notify(v1::watch_event::Event::Member(v1::MemberChange {
            node_id,
            state: state.as_str().to_string(),
            at_unix_ms: unix_ms(SystemTime::now()),
        }));
    }

    fn answer(&mut self, conn: u64, version: u64, ok: bool, reason: String) {
        let Some(node_id) = self.fleet.node_of(conn).map(str::to_string) else {
            return;
        };
        self.notify(v1::watch_event::Event::Answer(v1::PlaneAnswer {
            version,
            node_id,
            ok,
            reason,
        }));
    }

    /// Membership is advisory for the store: a failed write only weakens
    /// the wait after the next restart, so it is logged, not fatal.
    fn persist(&self, batch: Batch) {
        if let Err(e) = self.store.commit(&batch) {
            error!(error = %e, "cannot store the fleet membership");
        }
    }

    /// With replicas, every replica waits for this replica's data planes
    /// too: their records (acknowledged version, state) are shared at
    /// every change, in the background.
    fn shared(&self) -> bool {
        !self.store.replica_id().is_empty()
    }

    /// Keeps a member's record: shared with the other replicas (`take`: its
    /// stream just opened here), or stored for a restart (`store`).
    fn keep_member(&self, node_id: &str, take: bool, store: bool) {
        let Some(record) = self.fleet.record(node_id) else {
            return;
        };
        if self.shared() {
            self.store.share_member(record, take);
        } else if store {
            self.persist(Batch {
                fleet_put: vec![record],
                ..Default::default()
            });
        }
    }

    /// A member left: its record goes.
    fn drop_members(&self, node_ids: Vec<String>) {
        if self.shared() {
            for node_id in &node_ids {
                self.store.unshare_member(node_id);
            }
        } else if !node_ids.is_empty() {
            self.persist(Batch {
                fleet_delete: node_ids,
                ..Default::default()
            });
        }
    }

    /// Checks for members past the grace when the earliest one is due.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        let now = now();
        let Some(wait) = self.fleet.next_expiry(now) else {
            return;
        };
        let due = now + wait;
        if let Some((at, handle)) = self.expiry {
            if at <= due {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(wait, |act, ctx| {
            act.expiry = None;
            act.expire(ctx);
        });
        self.expiry = Some((due, handle));
    }

    fn expire(&mut self, ctx: &mut Context<Self>) {
        let left = self.fleet.expire(now());
        if !left.is_empty() {
            for member in &left {
                warn!(node_id = %member.node_id, grace = ?self.fleet.grace(), "data plane left the fleet: gone longer than the grace; applies no longer wait for it");
                self.member_changed(member.node_id.clone(), MemberState::Gone);
            }
            self.drop_members(left.into_iter().map(|m| m.node_id).collect());
        }
        self.schedule_expiry(ctx);
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Members restored from the store leave if they do not come back.
        self.schedule_expiry(ctx);
    }
}

/// A committed change to send to every data plane.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub commit: Commit,
    pub done: oneshot::Sender<AckReport>,
}

impl Handler<Publish> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let version = msg.commit.version;
        let (message, mut event) = history::publish(&msg.commit);
        event.bytes = prost::Message::encoded_len(&message) as u64;
        event.sent_to = self.fleet.publish(version, &message, msg.done);
        self.notify(v1::watch_event::Event::Push(event));
        ctx.run_later(self.apply_timeout, move |act, _| {
            if let Some(report) = act.fleet.timeout(version) {
                warn!(version, lagging = ?report.lagging, "apply timeout: data planes have not acknowledged");
            }
        });
    }
}

/// A data plane opened its stream; answers with its connection id.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct PlaneConnected {
    pub node_id: String,
    pub address: String,
    pub applied_version: u64,
    pub tx: PushSender,
    /// What it said it can do (`DataPlaneHello.features`).
    pub features: Vec<String>,
}

impl Handler<PlaneConnected> for Publisher {
    type Result = u64;

    fn handle(&mut self, msg: PlaneConnected, _: &mut Context<Self>) -> u64 {
        // Under the read lock the committer holds across commit and fsync:
        // a catch-up never carries a version that is not durable.
        let (version, catch_up) = {
            let config = self.config.read();
            let version = config.version();
            let catch_up = (msg.applied_version <= version && !config.failed())
                .then(|| config.catch_up(msg.applied_version));
            (version, catch_up)
        };
        let joined = self.fleet.connect(
            &msg.node_id,
            msg.address,
            msg.applied_version,
            version,
            msg.tx.clone(),
            now(),
        );
        self.fleet.set_features(&msg.node_id, msg.features);
        info!(node_id = %msg.node_id, conn = joined.conn, applied = msg.applied_version, version, new_member = joined.new_member, "data plane connected");
        // Durable before the plane can serve (and say it is ready), so a
        // restart right after still waits for it.
        self.keep_member(&msg.node_id, true, joined.new_member);
        let _ = msg.tx.send(Ok(defaults_message(&self.defaults)));
        match catch_up {
            Some(push) => {
                let _ = msg.tx.send(Ok(push));
            }
            None if msg.applied_version > version => warn!(
                node_id = %msg.node_id,
                plane_version = msg.applied_version,
                version,
                "data plane holds a newer version than this control plane; not pushing to it"
            ),
            // The store failed: nothing that is not durable goes out while stopping.
            None => {}
        }
        self.member_changed(msg.node_id, MemberState::Connected);
        joined.conn
    }
}

fn defaults_message(defaults: &v1::Defaults) -> v1::ControlPlaneMessage {
    v1::ControlPlaneMessage {
        msg: Some(v1::control_plane_message::Msg::Defaults(defaults.clone())),
    }
}

/// The global site file's settings changed: every connected plane is told.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDefaults(pub v1::Defaults);

impl Handler<SetDefaults> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: SetDefaults, _: &mut Context<Self>) {
        if msg.0 == self.defaults {
            return;
        }
        self.defaults = msg.0;
        let message = defaults_message(&self.defaults);
        for (_, tx) in self.fleet.streams() {
            let _ = tx.send(Ok(message.clone()));
        }
    }
}

/// Records of data planes other replicas hold, as the store's watch saw
/// them change (this replica's own come back too, and are skipped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteMembers {
    pub put: Vec<MemberRecord>,
    pub gone: Vec<String>,
}

impl Handler<RemoteMembers> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: RemoteMembers, _: &mut Context<Self>) {
        for record in msg.put {
            let node_id = record.node_id.clone();
            if let Some(state) = self.fleet.remote_update(record, now()) {
                self.member_changed(node_id, state);
            }
        }
        for node_id in msg.gone {
            if self.fleet.remote_gone(&node_id) {
                info!(%node_id, "data plane left the fleet: its replica dropped it");
                self.member_changed(node_id, MemberState::Gone);
            }
        }
    }
}

/// An ACK or NACK from a data plane, or the result of a BACKEND_TEST.
#[derive(Message)]
#[rtype(result = "()")]
pub enum PlaneReply {
    Ack {
        conn: u64,
        version: u64,
    },
    Nack {
        conn: u64,
        version: u64,
        reason: String,
    },
    BackendTest(v1::BackendTestResult),
    BreakerReset {
        conn: u64,
        route_id: String,
    },
}

impl Handler<PlaneReply> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: PlaneReply, _: &mut Context<Self>) {
        match msg {
            PlaneReply::Ack { conn, version } => {
                self.answer(conn, version, true, String::new());
                self.fleet.ack(conn, version);
                if let Some(node_id) = self.fleet.node_of(conn) {
                    self.keep_member(node_id, false, false);
                }
            }
            PlaneReply::Nack {
                conn,
                version,
                reason,
            } => {
                if let Some(node_id) = self.fleet.node_of(conn) {
                    warn!(%node_id, version, %reason, "data plane rejected a version");
                }
                self.answer(conn, version, false, reason.clone());
                self.fleet.nack(conn, version, reason);
            }
            PlaneReply::BackendTest(result) => {
                if let Some((_, reply)) = self.tests.remove(&result.id) {
                    let _ = reply.send(result);
                }
            }
            PlaneReply::BreakerReset { conn, route_id } => {
                self.reset_done(|route, _| route == route_id, conn);
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct PlaneGone {
    pub conn: u64,
}

impl Handler<PlaneGone> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: PlaneGone, ctx: &mut Context<Self>) {
        self.tests.retain(|_, (conn, _)| *conn != msg.conn);
        self.reset_done(|_, _| true, msg.conn);
        match self.fleet.disconnect(msg.conn, now()) {
            StreamEnd::Open => {}
            // Still a member: applies wait for it until the grace passes.
            StreamEnd::Disconnected(record) => {
                info!(node_id = %record.node_id, conn = msg.conn, grace = ?self.fleet.grace(), "data plane disconnected; waited for until the grace passes");
                self.member_changed(record.node_id.clone(), MemberState::Disconnected);
                self.keep_member(&record.node_id, false, true);
                self.schedule_expiry(ctx);
            }
            StreamEnd::Stopped(record) => {
                info!(node_id = %record.node_id, conn = msg.conn, "data plane stopped; it left the fleet");
                self.member_changed(record.node_id.clone(), MemberState::Stopped);
                self.drop_members(vec![record.node_id]);
            }
        }
    }
}

/// A data plane said it stops: applies stop waiting for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PlaneStopping {
    pub conn: u64,
    pub reason: String,
}

impl Handler<PlaneStopping> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: PlaneStopping, _: &mut Context<Self>) {
        if let Some(node_id) = self.fleet.stopping(msg.conn) {
            info!(%node_id, conn = msg.conn, reason = %msg.reason, "data plane stopping; applies no longer wait for it");
            self.keep_member(&node_id, false, false);
            self.member_changed(node_id, MemberState::Stopping);
        }
    }
}

/// Closes a route's breakers on every connected data plane; `done` once
/// each has confirmed (or gone away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResetBreakers {
    pub route_id: String,
    pub done: oneshot::Sender<()>,
}

impl Handler<ResetBreakers> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: ResetBreakers, _: &mut Context<Self>) {
        let request = v1::ControlPlaneMessage {
            msg: Some(v1::control_plane_message::Msg::ResetBreaker(
                v1::ResetBreaker {
                    route_id: msg.route_id.clone(),
                },
            )),
        };
        let pending: HashSet<u64> = self
            .fleet
            .streams()
            .filter(|(_, tx)| tx.send(Ok(request.clone())).is_ok())
            .map(|(conn, _)| conn)
            .collect();
        if pending.is_empty() {
            let _ = msg.done.send(());
        } else {
            self.resets.push((msg.route_id, pending, msg.done));
        }
    }
}

impl Publisher {
    /// Stream `conn` is done with the resets `matching` picks.
    fn reset_done(&mut self, matching: impl Fn(&str, u64) -> bool, conn: u64) {
        let mut i = 0;
        while i < self.resets.len() {
            let (route, pending, _) = &mut self.resets[i];
            if matching(route, conn) {
                pending.remove(&conn);
            }
            if pending.is_empty() {
                let (_, _, done) = self.resets.swap_remove(i);
                let _ = done.send(());
            } else {
                i += 1;
            }
        }
    }
}

/// Runs BACKEND_TEST on a connected data plane; false when none is connected.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct AskBackendTest {
    pub url: String,
    pub reply: oneshot::Sender<v1::BackendTestResult>,
}

impl Handler<AskBackendTest> for Publisher {
    type Result = bool;

    fn handle(&mut self, msg: AskBackendTest, _: &mut Context<Self>) -> bool {
        self.next_test += 1;
        let id = self.next_test;
        let request = v1::ControlPlaneMessage {
            msg: Some(v1::control_plane_message::Msg::BackendTest(
                v1::BackendTestRequest {
                    id,
                    backend_url: msg.url,
                },
            )),
        };
        let Some((conn, tx)) = self.fleet.streams().next() else {
            return false;
        };
        if tx.send(Ok(request)).is_err() {
            return false;
        }
        self.tests.insert(id, (conn, msg.reply));
        true
    }
}

/// An operator's WatchConfig stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch(pub mpsc::UnboundedSender<Result<v1::WatchEvent, tonic::Status>>);

impl Handler<Watch> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: Watch, _: &mut Context<Self>) {
        self.watchers.push(msg.0);
    }
}

#[derive(Message)]
#[rtype(result = "v1::ListDataPlanesResponse")]
pub struct ListPlanes;

impl Handler<ListPlanes> for Publisher {
    type Result = MessageResult<ListPlanes>;

    fn handle(&mut self, _: ListPlanes, _: &mut Context<Self>) -> Self::Result {
        let version = self.config.read().version();
        MessageResult(v1::ListDataPlanesResponse {
            version,
            data_planes: self.fleet.list(version),
        })
    }
}

#[derive(Message)]
#[rtype(result = "v1::GetSnapshotResponse")]
pub struct CurrentSnapshot;

impl Handler<CurrentSnapshot> for Publisher {
    type Result = MessageResult<CurrentSnapshot>;

    fn handle(&mut self, _: CurrentSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.config.read().snapshot())
    }
}

/// Sizes of what the publisher keeps, for `/debug/counts`.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct Counts;

impl Handler<Counts> for Publisher {
    type Result = MessageResult<Counts>;

    fn handle(&mut self, _: Counts, _: &mut Context<Self>) -> Self::Result {
        let (members, gone, waiters) = self.fleet.counts();
        MessageResult(serde_json::json!({
            "fleet_members": members,
            "fleet_gone": gone,
            "apply_waiters": waiters,
            "backend_tests": self.tests.len(),
            "breaker_resets": self.resets.len(),
            "watchers": self.watchers.len(),
        }))
    }
}
