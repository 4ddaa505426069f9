//! The publisher: one stream per connected data plane, a full snapshot on
//! connect and deltas after, and the acknowledgements that release
//! `CONFIG_APPLY` waiters.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use portico_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::global::Commit;

pub type PushSender = mpsc::UnboundedSender<Result<v1::ControlPlaneMessage, tonic::Status>>;

/// How the data planes connected at commit time answered one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckReport {
    pub version: u64,
    pub acked: Vec<String>,
    pub nacked: Vec<String>,
    /// Still silent when the apply timeout passed.
    pub lagging: Vec<String>,
}

struct Plane {
    node_id: String,
    address: String,
    connected_since: SystemTime,
    last_nack: Option<(u64, String)>,
    acked: u64,
    /// The plane holds a newer version than this control plane knows (it lost
    /// its state); it is left alone rather than pushed backwards.
    ahead: bool,
    tx: PushSender,
}

struct Waiter {
    report: AckReport,
    pending: HashSet<u64>,
    done: oneshot::Sender<AckReport>,
}

/// Versions whose changed route ids are kept, so a data plane that reconnects
/// gets one delta of what changed since its version; older ones get a snapshot.
const HISTORY: usize = 4096;
/// ... and at most this many route ids in them, to bound memory.
const HISTORY_ROUTES: usize = 200_000;

pub struct Publisher {
    apply_timeout: Duration,
    /// Recent pushes, oldest first: (version, ids changed since version - 1).
    history: std::collections::VecDeque<(u64, Vec<String>)>,
    history_routes: usize,
    /// Operators' WatchConfig streams.
    watchers: Vec<mpsc::UnboundedSender<Result<v1::WatchEvent, tonic::Status>>>,
    next_test: u64,
    /// BACKEND_TEST requests waiting for a data plane: id -> (conn, reply).
    tests: HashMap<u64, (u64, oneshot::Sender<v1::BackendTestResult>)>,
    version: u64,
    /// Shared with the global configuration, not copies.
    routes: HashMap<String, Arc<v1::Route>>,
    planes: HashMap<u64, Plane>,
    next_conn: u64,
    waiters: Vec<Waiter>,
}

impl Publisher {
    /// Starts at the stored `version` with its `routes`.
    pub fn new(apply_timeout: Duration, version: u64, routes: Vec<Arc<v1::Route>>) -> Self {
        Publisher {
            apply_timeout,
            history: std::collections::VecDeque::new(),
            history_routes: 0,
            watchers: Vec::new(),
            next_test: 0,
            tests: HashMap::new(),
            version,
            routes: routes
                .into_iter()
                .map(|r| (r.route_id.clone(), r))
                .collect(),
            planes: HashMap::new(),
            next_conn: 0,
            waiters: Vec::new(),
        }
    }

    /// What a data plane holding `applied` needs: one delta of every route
    /// changed since then, when those versions are all kept, else a snapshot.
    fn catch_up(&self, applied: u64) -> Vec<v1::ControlPlaneMessage> {
        if applied == self.version && applied > 0 {
            // Up to date (e.g. started from its cache): an empty delta confirms it.
            return vec![push(
                self.version,
                applied,
                v1::config_push::Body::Delta(v1::Delta::default()),
            )];
        }
        let first = self.history.front().map(|(v, _)| *v);
        if applied > 0 && applied < self.version && first.is_some_and(|first| first <= applied + 1)
        {
            let changed: HashSet<&String> = self
                .history
                .iter()
                .filter(|(v, _)| *v > applied)
                .flat_map(|(_, ids)| ids)
                .collect();
            let mut delta = v1::Delta::default();
            for id in changed {
                match self.routes.get(id) {
                    Some(route) => delta.upserted.push(route.as_ref().clone()),
                    None => delta.removed.push(id.clone()),
                }
            }
            return vec![push(
                self.version,
                applied,
                v1::config_push::Body::Delta(delta),
            )];
        }
        vec![self.snapshot_push()]
    }

    /// Takes a commit into the routes and the history; returns the push for
    /// the data planes and the operators' event (without its recipients).
    fn record(&mut self, commit: Commit) -> (v1::ControlPlaneMessage, v1::PushEvent) {
        let Commit {
            version,
            upserted,
            removed,
        } = commit;
        let base = self.version;
        self.version = version;
        let mut event = v1::PushEvent {
            version,
            committed_at_unix_ms: unix_ms(SystemTime::now()),
            removed: removed.clone(),
            ..Default::default()
        };
        for id in &removed {
            self.routes.remove(id);
        }
        for route in &upserted {
            let previous = self.routes.insert(route.route_id.clone(), route.clone());
            let list = if previous.is_some() {
                &mut event.changed
            } else {
                &mut event.added
            };
            list.push(route.route_id.clone());
        }
        // Versions are dense; a gap (never expected) makes history unusable.
        if base + 1 != version {
            self.history.clear();
            self.history_routes = 0;
        }
        let changed: Vec<String> = upserted
            .iter()
            .map(|r| r.route_id.clone())
            .chain(removed.iter().cloned())
            .collect();
        self.history_routes += changed.len();
        self.history.push_back((version, changed));
        while self.history.len() > HISTORY || self.history_routes > HISTORY_ROUTES {
            if let Some((_, old)) = self.history.pop_front() {
                self.history_routes -= old.len();
            }
        }
        let delta = v1::Delta {
            upserted: upserted.iter().map(|r| r.as_ref().clone()).collect(),
            removed,
        };
        (
            push(version, base, v1::config_push::Body::Delta(delta)),
            event,
        )
    }

    fn snapshot_push(&self) -> v1::ControlPlaneMessage {
        push(
            self.version,
            0,
            v1::config_push::Body::Snapshot(v1::Snapshot {
                routes: self.routes.values().map(|r| r.as_ref().clone()).collect(),
            }),
        )
    }

    /// Removes `conn` from every waiter, resolving those left with nobody to wait for.
    fn settle(&mut self, conn: u64, up_to: u64, outcome: fn(&mut AckReport) -> &mut Vec<String>) {
        let Some(plane) = self.planes.get(&conn) else {
            return;
        };
        let node = plane.node_id.clone();
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &mut self.waiters[i];
            if w.report.version <= up_to && w.pending.remove(&conn) {
                outcome(&mut w.report).push(node.clone());
            }
            if w.pending.is_empty() {
                let w = self.waiters.swap_remove(i);
                let _ = w.done.send(w.report);
            } else {
                i += 1;
            }
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Publisher {
    fn notify(&mut self, event: v1::watch_event::Event) {
        let event = v1::WatchEvent { event: Some(event) };
        self.watchers.retain(|w| w.send(Ok(event.clone())).is_ok());
    }

    fn answer(&mut self, conn: u64, version: u64, ok: bool, reason: String) {
        let Some(plane) = self.planes.get(&conn) else {
            return;
        };
        let node_id = plane.node_id.clone();
        self.notify(v1::watch_event::Event::Answer(v1::PlaneAnswer {
            version,
            node_id,
            ok,
            reason,
        }));
    }
}

fn push(version: u64, base_version: u64, body: v1::config_push::Body) -> v1::ControlPlaneMessage {
    let committed_at_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    v1::ControlPlaneMessage {
        msg: Some(v1::control_plane_message::Msg::Push(v1::ConfigPush {
            version,
            base_version,
            body: Some(body),
            committed_at_unix_ms,
        })),
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;
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
        let (message, mut event) = self.record(msg.commit);
        event.sent_to = self
            .planes
            .values()
            .filter(|p| !p.ahead)
            .map(|p| p.node_id.clone())
            .collect();
        event.sent_to.sort();
        event.bytes = prost::Message::encoded_len(&message) as u64;
        self.notify(v1::watch_event::Event::Push(event));
        let mut pending = HashSet::new();
        for (conn, plane) in &self.planes {
            if plane.ahead {
                continue;
            }
            if plane.tx.send(Ok(message.clone())).is_ok() {
                pending.insert(*conn);
            }
        }
        let report = AckReport {
            version,
            ..Default::default()
        };
        if pending.is_empty() {
            let _ = msg.done.send(report);
            return;
        }
        self.waiters.push(Waiter {
            report,
            pending,
            done: msg.done,
        });
        ctx.run_later(self.apply_timeout, move |act, _| {
            let Some(i) = act.waiters.iter().position(|w| w.report.version == version) else {
                return;
            };
            let mut w = act.waiters.swap_remove(i);
            w.report.lagging = w
                .pending
                .iter()
                .filter_map(|c| act.planes.get(c).map(|p| p.node_id.clone()))
                .collect();
            warn!(version, lagging = ?w.report.lagging, "apply timeout: data planes have not acknowledged");
            let _ = w.done.send(w.report);
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
}

impl Handler<PlaneConnected> for Publisher {
    type Result = u64;

    fn handle(&mut self, msg: PlaneConnected, _: &mut Context<Self>) -> u64 {
        self.next_conn += 1;
        let conn = self.next_conn;
        let ahead = msg.applied_version > self.version;
        if ahead {
            warn!(
                node_id = %msg.node_id,
                plane_version = msg.applied_version,
                version = self.version,
                "data plane holds a newer version than this control plane; not pushing to it"
            );
        } else {
            for message in self.catch_up(msg.applied_version) {
                let _ = msg.tx.send(Ok(message));
            }
        }
        info!(node_id = %msg.node_id, conn, applied = msg.applied_version, version = self.version, "data plane connected");
        self.planes.insert(
            conn,
            Plane {
                node_id: msg.node_id,
                address: msg.address,
                connected_since: SystemTime::now(),
                last_nack: None,
                acked: msg.applied_version.min(self.version),
                ahead,
                tx: msg.tx,
            },
        );
        conn
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
}

impl Handler<PlaneReply> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: PlaneReply, _: &mut Context<Self>) {
        match msg {
            PlaneReply::Ack { conn, version } => {
                if let Some(plane) = self.planes.get_mut(&conn) {
                    plane.acked = plane.acked.max(version);
                }
                self.answer(conn, version, true, String::new());
                self.settle(conn, version, |r| &mut r.acked);
            }
            PlaneReply::Nack {
                conn,
                version,
                reason,
            } => {
                if let Some(plane) = self.planes.get_mut(&conn) {
                    warn!(node_id = %plane.node_id, version, %reason, "data plane rejected a version");
                    plane.last_nack = Some((version, reason.clone()));
                }
                self.answer(conn, version, false, reason);
                self.settle(conn, version, |r| &mut r.nacked);
            }
            PlaneReply::BackendTest(result) => {
                if let Some((_, reply)) = self.tests.remove(&result.id) {
                    let _ = reply.send(result);
                }
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

    fn handle(&mut self, msg: PlaneGone, _: &mut Context<Self>) {
        // A plane that went away no longer holds anyone's apply back.
        self.settle(msg.conn, u64::MAX, |r| &mut r.lagging);
        self.tests.retain(|_, (conn, _)| *conn != msg.conn);
        if let Some(plane) = self.planes.remove(&msg.conn) {
            info!(node_id = %plane.node_id, conn = msg.conn, "data plane disconnected");
        }
    }
}

/// A message for every connected data plane (e.g. a breaker reset).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast(pub v1::ControlPlaneMessage);

impl Handler<Broadcast> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) {
        for plane in self.planes.values() {
            let _ = plane.tx.send(Ok(msg.0.clone()));
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
        let Some((conn, plane)) = self.planes.iter().min_by_key(|(conn, _)| **conn) else {
            return false;
        };
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
        if plane.tx.send(Ok(request)).is_err() {
            return false;
        }
        self.tests.insert(id, (*conn, msg.reply));
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
        let mut data_planes: Vec<v1::DataPlaneInfo> = self
            .planes
            .values()
            .map(|p| v1::DataPlaneInfo {
                node_id: p.node_id.clone(),
                address: p.address.clone(),
                connected_since_unix_ms: unix_ms(p.connected_since),
                acked_version: p.acked,
                lag: self.version.saturating_sub(p.acked),
                last_nack_version: p.last_nack.as_ref().map_or(0, |n| n.0),
                last_nack_reason: p
                    .last_nack
                    .as_ref()
                    .map(|n| n.1.clone())
                    .unwrap_or_default(),
            })
            .collect();
        data_planes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        MessageResult(v1::ListDataPlanesResponse {
            version: self.version,
            data_planes,
        })
    }
}

#[derive(Message)]
#[rtype(result = "v1::GetSnapshotResponse")]
pub struct CurrentSnapshot;

impl Handler<CurrentSnapshot> for Publisher {
    type Result = MessageResult<CurrentSnapshot>;

    fn handle(&mut self, _: CurrentSnapshot, _: &mut Context<Self>) -> Self::Result {
        let mut routes: Vec<v1::Route> = self.routes.values().map(|r| r.as_ref().clone()).collect();
        routes.sort_by_key(|r| portico_proto::model::parse_route_id(&r.route_id).unwrap_or(0));
        MessageResult(v1::GetSnapshotResponse {
            version: self.version,
            snapshot: Some(v1::Snapshot { routes }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, backend: &str) -> Arc<v1::Route> {
        Arc::new(v1::Route {
            route_id: id.to_string(),
            domains: vec![format!("{id}.test")],
            path: "/".to_string(),
            backend_url: backend.to_string(),
            ..Default::default()
        })
    }

    fn commit(version: u64, upserted: Vec<Arc<v1::Route>>, removed: &[&str]) -> Commit {
        Commit {
            version,
            upserted,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn parts(message: &v1::ControlPlaneMessage) -> (u64, u64, &v1::config_push::Body) {
        let Some(v1::control_plane_message::Msg::Push(p)) = &message.msg else {
            panic!("not a push: {message:?}");
        };
        (p.version, p.base_version, p.body.as_ref().expect("a body"))
    }

    #[test]
    fn a_data_plane_behind_gets_one_delta_of_what_changed_since_its_version() {
        let mut p = Publisher::new(Duration::from_secs(1), 0, Vec::new());
        p.record(commit(
            1,
            vec![route("r1", "http://a"), route("r2", "http://a")],
            &[],
        ));
        p.record(commit(2, vec![route("r1", "http://b")], &["r2"]));
        p.record(commit(3, vec![route("r3", "http://a")], &[]));

        let pushes = p.catch_up(1);
        assert_eq!(pushes.len(), 1);
        let (version, base, body) = parts(&pushes[0]);
        assert_eq!((version, base), (3, 1));
        let v1::config_push::Body::Delta(delta) = body else {
            panic!("a delta: {body:?}");
        };
        let mut upserted: Vec<_> = delta
            .upserted
            .iter()
            .map(|r| (r.route_id.as_str(), r.backend_url.as_str()))
            .collect();
        upserted.sort();
        assert_eq!(upserted, [("r1", "http://b"), ("r3", "http://a")]);
        assert_eq!(delta.removed, ["r2"]);

        let current = p.catch_up(3);
        let (_, _, body) = parts(&current[0]);
        assert_eq!(body, &v1::config_push::Body::Delta(v1::Delta::default()));
        let fresh = p.catch_up(0);
        let (version, base, body) = parts(&fresh[0]);
        assert_eq!((version, base), (3, 0));
        let v1::config_push::Body::Snapshot(snapshot) = body else {
            panic!("a snapshot: {body:?}");
        };
        assert_eq!(snapshot.routes.len(), 2);
    }

    #[test]
    fn a_data_plane_older_than_the_history_gets_a_snapshot() {
        let mut p = Publisher::new(Duration::from_secs(1), 0, Vec::new());
        for v in 1..=(HISTORY as u64 + 2) {
            p.record(commit(v, vec![route(&format!("r{v}"), "http://a")], &[]));
        }
        let old = p.catch_up(1);
        let (_, base, body) = parts(&old[0]);
        assert_eq!(base, 0);
        assert!(matches!(body, v1::config_push::Body::Snapshot(_)));
        let recent = p.catch_up(3);
        let (_, base, body) = parts(&recent[0]);
        assert_eq!(base, 3);
        assert!(matches!(body, v1::config_push::Body::Delta(d) if d.upserted.len() == HISTORY - 1));
    }
}
