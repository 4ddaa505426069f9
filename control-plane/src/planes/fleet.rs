//! The fleet: every data plane that has connected, its streams, the version
//! it acknowledged, and the CONFIG_APPLY waiters it releases. A member that
//! lost its stream is waited for until the fleet grace passes; one that said
//! it stops is not, and leaves when its stream ends. Pure: the publisher actor
//! feeds it events and the clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use portico_proto::time::{from_unix_ms, unix_ms};
use portico_proto::v1;
use tokio::sync::{mpsc, oneshot};

use crate::store::MemberRecord;

pub type PushSender = mpsc::UnboundedSender<Result<v1::ControlPlaneMessage, tonic::Status>>;

/// How the fleet answered one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckReport {
    pub version: u64,
    pub acked: Vec<String>,
    pub nacked: Vec<String>,
    /// Still silent when the apply timeout passed.
    pub lagging: Vec<String>,
    /// Left the fleet (gone longer than the grace) while it was waited for.
    pub gone: Vec<String>,
    /// Said it stops while it was waited for.
    pub stopping: Vec<String>,
}

/// Gone members kept for `porticoctl dataplanes`, newest last.
const GONE_SHOWN: usize = 64;

/// A member's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Connected,
    /// Every stream it has open said it stops: no longer waited for.
    Stopping,
    /// Lost its stream less than the grace ago: still waited for.
    Disconnected,
    Gone,
    /// Left when the stream of a stopping plane ended.
    Stopped,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Connected => "connected",
            MemberState::Stopping => "stopping",
            MemberState::Disconnected => "disconnected",
            MemberState::Gone => "gone",
            MemberState::Stopped => "stopped",
        }
    }
}

struct Member {
    node_id: String,
    address: String,
    /// Start of the current stream, or of the last one; `None` when restored
    /// from the store and not back yet.
    connected_since: Option<SystemTime>,
    /// Last time a stream of it was open (wall clock, for operators and the store).
    last_seen: SystemTime,
    /// The same moment on the monotonic clock, for the grace.
    seen: Instant,
    acked: u64,
    last_nack: Option<(u64, String)>,
    /// It holds a newer version than this control plane knows (this control
    /// plane lost its state); it is left alone rather than pushed backwards.
    ahead: bool,
    /// Open streams (more than one only while a reconnect overlaps the old
    /// stream's end, or when two processes share a node id, as during an
    /// upgrade on one host).
    streams: Vec<Stream>,
    /// It left because it stopped (shown as "stopped" rather than "gone").
    stopped: bool,
    /// Its stream is held by another replica (docs/HA.md), which shares
    /// its record: what that replica last said.
    remote: Option<Remote>,
}

struct Remote {
    replica: String,
    state: MemberState,
}

struct Stream {
    conn: u64,
    tx: PushSender,
    /// The process behind it said it stops.
    stopping: bool,
}

impl Member {
    fn new(node_id: &str, now: Instant) -> Member {
        Member {
            node_id: node_id.to_string(),
            address: String::new(),
            connected_since: None,
            last_seen: SystemTime::now(),
            seen: now,
            acked: 0,
            last_nack: None,
            ahead: false,
            streams: Vec::new(),
            stopped: false,
            remote: None,
        }
    }

    fn state(&self) -> MemberState {
        if let Some(remote) = &self.remote {
            remote.state
        } else if self.streams.is_empty() {
            MemberState::Disconnected
        } else if self.streams.iter().all(|s| s.stopping) {
            MemberState::Stopping
        } else {
            MemberState::Connected
        }
    }

    fn record(&self) -> MemberRecord {
        MemberRecord {
            node_id: self.node_id.clone(),
            address: self.address.clone(),
            acked_version: self.acked,
            last_seen_unix_ms: unix_ms(self.last_seen),
            replica: self
                .remote
                .as_ref()
                .map(|r| r.replica.clone())
                .unwrap_or_default(),
            state: self.state().as_str().to_string(),
        }
    }

    fn info(&self, version: u64, state: MemberState, here: &str) -> v1::DataPlaneInfo {
        v1::DataPlaneInfo {
            node_id: self.node_id.clone(),
            address: self.address.clone(),
            connected_since_unix_ms: self.connected_since.map_or(0, unix_ms),
            acked_version: self.acked,
            lag: version.saturating_sub(self.acked),
            last_nack_version: self.last_nack.as_ref().map_or(0, |n| n.0),
            last_nack_reason: self
                .last_nack
                .as_ref()
                .map(|n| n.1.clone())
                .unwrap_or_default(),
            state: state.as_str().to_string(),
            last_seen_unix_ms: unix_ms(self.last_seen),
            replica: self
                .remote
                .as_ref()
                .map_or(here, |r| r.replica.as_str())
                .to_string(),
        }
    }
}

struct Waiter {
    report: AckReport,
    /// Node ids not heard from yet.
    pending: HashSet<String>,
    done: oneshot::Sender<AckReport>,
}

/// What the end of a stream did to its member.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The member has another stream open.
    Open,
    /// No stream left: waited for until the grace passes.
    Disconnected(MemberRecord),
    /// Its last stream was a stopping one: it left the fleet.
    Stopped(MemberRecord),
}

/// What a new stream found.
#[derive(Debug, PartialEq, Eq)]
pub struct Joined {
    pub conn: u64,
    /// Not a member before (or gone): the store needs it.
    pub new_member: bool,
}

pub struct Fleet {
    grace: Duration,
    members: HashMap<String, Member>,
    /// Stream id -> node id.
    conns: HashMap<u64, String>,
    next_conn: u64,
    gone: VecDeque<Member>,
    waiters: Vec<Waiter>,
    /// This replica's id when replicas share the fleet; empty otherwise.
    replica: String,
}

impl MemberState {
    /// A state another replica shared; `None` for one never shared.
    fn shared(raw: &str) -> Option<MemberState> {
        match raw {
            "" | "connected" => Some(MemberState::Connected),
            "disconnected" => Some(MemberState::Disconnected),
            "stopping" => Some(MemberState::Stopping),
            _ => None,
        }
    }
}

impl Fleet {
    /// The fleet of this replica among others sharing it (`replica`).
    pub fn shared(grace: Duration, replica: &str) -> Self {
        Fleet {
            replica: replica.to_string(),
            ..Fleet::new(grace)
        }
    }

    pub fn new(grace: Duration) -> Self {
        Fleet {
            replica: String::new(),
            grace,
            members: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            gone: VecDeque::new(),
            waiters: Vec::new(),
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Members from the store, counted as just seen: after a restart they
    /// are waited for during the grace, as if their streams had just blipped.
    /// Those another replica holds are taken as it shared them.
    pub fn restore(&mut self, records: Vec<MemberRecord>, now: Instant) {
        for r in records {
            if self.is_remote(&r) {
                self.remote_update(r, now);
                continue;
            }
            let mut member = Member::new(&r.node_id, now);
            member.address = r.address;
            member.last_seen = from_unix_ms(r.last_seen_unix_ms);
            member.acked = r.acked_version;
            self.members.insert(r.node_id, member);
        }
    }

    fn is_remote(&self, record: &MemberRecord) -> bool {
        !record.replica.is_empty() && record.replica != self.replica
    }

    /// Another replica shared a member's record: the member is waited for
    /// (or not) as that replica says, and its acknowledgements count here.
    /// Returns its state when taken, `None` when the record is this
    /// replica's own or the plane's stream is open here.
    pub fn remote_update(&mut self, record: MemberRecord, now: Instant) -> Option<MemberState> {
        if !self.is_remote(&record) {
            return None;
        }
        let state = MemberState::shared(&record.state)?;
        let node_id = record.node_id.clone();
        if self
            .members
            .get(&node_id)
            .is_some_and(|m| !m.streams.is_empty())
        {
            return None;
        }
        self.gone.retain(|m| m.node_id != node_id);
        let member = self
            .members
            .entry(node_id.clone())
            .or_insert_with(|| Member::new(&node_id, now));
        member.address = record.address;
        member.acked = record.acked_version;
        member.last_seen = from_unix_ms(record.last_seen_unix_ms);
        member.seen = now;
        member.ahead = false;
        member.remote = Some(Remote {
            replica: record.replica,
            state,
        });
        let acked = member.acked;
        if state == MemberState::Stopping {
            self.settle(&node_id, u64::MAX, |r| &mut r.stopping);
        } else {
            self.settle(&node_id, acked, |r| &mut r.acked);
        }
        Some(state)
    }

    /// The replica holding a member's stream dropped its record (the plane
    /// left, or that replica died): it leaves here too. True when it did.
    pub fn remote_gone(&mut self, node_id: &str) -> bool {
        if self.members.get(node_id).is_none_or(|m| m.remote.is_none()) {
            return false;
        }
        self.settle(node_id, u64::MAX, |r| &mut r.gone);
        if let Some(member) = self.members.remove(node_id) {
            self.remember_gone(member);
        }
        true
    }

    /// A data plane opened a stream holding `applied`, while this control
    /// plane is at `version`; it was sent its catch-up unless `ahead`.
    pub fn connect(
        &mut self,
        node_id: &str,
        address: String,
        applied: u64,
        version: u64,
        tx: PushSender,
        now: Instant,
    ) -> Joined {
        self.next_conn += 1;
        let conn = self.next_conn;
        self.conns.insert(conn, node_id.to_string());
        self.gone.retain(|m| m.node_id != node_id);
        let new_member = !self.members.contains_key(node_id);
        let member = self
            .members
            .entry(node_id.to_string())
            .or_insert_with(|| Member::new(node_id, now));
        member.remote = None;
        member.address = address;
        member.connected_since = Some(SystemTime::now());
        member.last_seen = SystemTime::now();
        member.seen = now;
        member.ahead = applied > version;
        member.acked = applied.min(version);
        member.streams.push(Stream {
            conn,
            tx,
            stopping: false,
        });
        if !member.ahead {
            // It already serves what it says it holds.
            self.settle(node_id, applied, |r| &mut r.acked);
        }
        Joined { conn, new_member }
    }

    /// The process behind stream `conn` stops. Returns its node id when the
    /// member now only has stopping streams: it is no longer waited for.
    pub fn stopping(&mut self, conn: u64) -> Option<String> {
        let node_id = self.conns.get(&conn)?.clone();
        let member = self.members.get_mut(&node_id)?;
        let stream = member.streams.iter_mut().find(|s| s.conn == conn)?;
        stream.stopping = true;
        if member.state() != MemberState::Stopping {
            return None;
        }
        self.settle(&node_id, u64::MAX, |r| &mut r.stopping);
        Some(node_id)
    }

    /// A stream ended. A member left with no stream is waited for until the
    /// grace passes, unless that stream was a stopping one: then it leaves.
    pub fn disconnect(&mut self, conn: u64, now: Instant) -> StreamEnd {
        let Some(node_id) = self.conns.remove(&conn) else {
            return StreamEnd::Open;
        };
        let Some(member) = self.members.get_mut(&node_id) else {
            return StreamEnd::Open;
        };
        let Some(i) = member.streams.iter().position(|s| s.conn == conn) else {
            return StreamEnd::Open;
        };
        let ended = member.streams.remove(i);
        if !member.streams.is_empty() {
            return StreamEnd::Open;
        }
        member.last_seen = SystemTime::now();
        member.seen = now;
        if !ended.stopping {
            return StreamEnd::Disconnected(member.record());
        }
        let Some(mut member) = self.members.remove(&node_id) else {
            return StreamEnd::Open;
        };
        member.stopped = true;
        let record = member.record();
        self.remember_gone(member);
        StreamEnd::Stopped(record)
    }

    fn remember_gone(&mut self, member: Member) {
        self.gone.push_back(member);
        if self.gone.len() > GONE_SHOWN {
            self.gone.pop_front();
        }
    }

    /// A member as stored.
    pub fn record(&self, node_id: &str) -> Option<MemberRecord> {
        self.members.get(node_id).map(Member::record)
    }

    /// The node id of a stream, if it is still open.
    pub fn node_of(&self, conn: u64) -> Option<&str> {
        self.conns.get(&conn).map(String::as_str)
    }

    pub fn ack(&mut self, conn: u64, version: u64) {
        let Some(node_id) = self.conns.get(&conn).cloned() else {
            return;
        };
        if let Some(member) = self.members.get_mut(&node_id) {
            member.acked = member.acked.max(version);
        }
        self.settle(&node_id, version, |r| &mut r.acked);
    }

    pub fn nack(&mut self, conn: u64, version: u64, reason: String) {
        let Some(node_id) = self.conns.get(&conn).cloned() else {
            return;
        };
        if let Some(member) = self.members.get_mut(&node_id) {
            member.last_nack = Some((version, reason));
        }
        self.settle(&node_id, version, |r| &mut r.nacked);
    }

    /// Sends a pushed version to every stream, and waits for every member
    /// that is connected or within the grace (none is ahead), unless it
    /// already acknowledged the version. Returns the node ids it was sent to.
    pub fn publish(
        &mut self,
        version: u64,
        message: &v1::ControlPlaneMessage,
        done: oneshot::Sender<AckReport>,
    ) -> Vec<String> {
        let mut sent_to = Vec::new();
        let mut pending = HashSet::new();
        let mut report = AckReport {
            version,
            ..Default::default()
        };
        for member in self.members.values().filter(|m| !m.ahead) {
            if member.acked >= version {
                // Its catch-up on connect already carried this version.
                report.acked.push(member.node_id.clone());
                continue;
            }
            let mut sent = false;
            for stream in &member.streams {
                sent |= stream.tx.send(Ok(message.clone())).is_ok();
            }
            if sent {
                sent_to.push(member.node_id.clone());
            }
            // A stopping plane still applies what it is sent while it
            // drains, but nobody waits for a plane that takes no new traffic.
            if member.state() != MemberState::Stopping {
                pending.insert(member.node_id.clone());
            }
        }
        sent_to.sort();
        report.acked.sort();
        if pending.is_empty() {
            let _ = done.send(report);
        } else {
            self.waiters.push(Waiter {
                report,
                pending,
                done,
            });
        }
        sent_to
    }

    /// The apply timeout of `version` passed: its waiter is answered, with
    /// the members still silent as lagging.
    pub fn timeout(&mut self, version: u64) -> Option<AckReport> {
        let i = self
            .waiters
            .iter()
            .position(|w| w.report.version == version)?;
        let mut w = self.waiters.swap_remove(i);
        w.report.lagging = w.pending.drain().collect();
        w.report.lagging.sort();
        let _ = w.done.send(w.report.clone());
        Some(w.report)
    }

    /// Members disconnected for the grace or longer leave the fleet; returns
    /// their records, for the store and the operators.
    pub fn expire(&mut self, now: Instant) -> Vec<MemberRecord> {
        let grace = self.grace;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.remote.is_none() && m.streams.is_empty() && now.duration_since(m.seen) >= grace
            })
            .map(|m| m.node_id.clone())
            .collect();
        let mut left = Vec::new();
        for node_id in expired {
            self.settle(&node_id, u64::MAX, |r| &mut r.gone);
            if let Some(member) = self.members.remove(&node_id) {
                left.push(member.record());
                self.remember_gone(member);
            }
        }
        left
    }

    /// How long until the next disconnected member's grace ends.
    pub fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.members
            .values()
            .filter(|m| m.remote.is_none() && m.streams.is_empty())
            .map(|m| (m.seen + self.grace).saturating_duration_since(now))
            .min()
    }

    /// Every open stream, oldest first, those of stopping planes last.
    pub fn streams(&self) -> impl Iterator<Item = (u64, &PushSender)> {
        let mut all: Vec<&Stream> = self.members.values().flat_map(|m| &m.streams).collect();
        all.sort_by_key(|s| (s.stopping, s.conn));
        all.into_iter().map(|s| (s.conn, &s.tx))
    }

    /// (members, gone members shown, apply waiters), for `/debug/counts`.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.members.len(), self.gone.len(), self.waiters.len())
    }

    /// Members, then the members gone recently, by node id.
    pub fn list(&self, version: u64) -> Vec<v1::DataPlaneInfo> {
        let mut all: Vec<v1::DataPlaneInfo> = self
            .members
            .values()
            .map(|m| m.info(version, m.state(), &self.replica))
            .chain(self.gone.iter().map(|m| {
                let state = if m.stopped {
                    MemberState::Stopped
                } else {
                    MemberState::Gone
                };
                m.info(version, state, &self.replica)
            }))
            .collect();
        all.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        all
    }

    /// Records `node`'s answer in every waiter for a version up to `up_to`,
    /// resolving those left with nobody to wait for.
    fn settle(&mut self, node: &str, up_to: u64, outcome: fn(&mut AckReport) -> &mut Vec<String>) {
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &mut self.waiters[i];
            if w.report.version <= up_to && w.pending.remove(node) {
                outcome(&mut w.report).push(node.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use oneshot::error::TryRecvError;

    const GRACE: Duration = Duration::from_secs(10);

    fn stream() -> (
        PushSender,
        mpsc::UnboundedReceiver<Result<v1::ControlPlaneMessage, tonic::Status>>,
    ) {
        mpsc::unbounded_channel()
    }

    fn message() -> v1::ControlPlaneMessage {
        v1::ControlPlaneMessage::default()
    }

    type Pushes = mpsc::UnboundedReceiver<Result<v1::ControlPlaneMessage, tonic::Status>>;

    /// Connects `node` holding `applied` while the fleet is at `version`;
    /// the receiver stands for the data plane's end of the stream.
    fn join(
        fleet: &mut Fleet,
        node: &str,
        applied: u64,
        version: u64,
        now: Instant,
    ) -> (u64, Pushes) {
        let (tx, pushes) = stream();
        (
            fleet
                .connect(node, "x".into(), applied, version, tx, now)
                .conn,
            pushes,
        )
    }

    fn publish(fleet: &mut Fleet, version: u64) -> oneshot::Receiver<AckReport> {
        let (tx, rx) = oneshot::channel();
        fleet.publish(version, &message(), tx);
        rx
    }

    fn shared_record(node: &str, replica: &str, acked: u64, state: &str) -> MemberRecord {
        MemberRecord {
            node_id: node.into(),
            address: "y".into(),
            acked_version: acked,
            last_seen_unix_ms: 1,
            replica: replica.into(),
            state: state.into(),
        }
    }

    #[test]
    fn a_plane_on_another_replica_holds_the_apply_until_its_ack_is_shared() {
        let t0 = Instant::now();
        let mut fleet = Fleet::shared(GRACE, "r1");
        let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
        // Its own record coming back is not a remote member.
        assert_eq!(
            fleet.remote_update(shared_record("a", "r1", 0, "connected"), t0),
            None
        );
        assert_eq!(
            fleet.remote_update(shared_record("b", "r2", 0, "connected"), t0),
            Some(MemberState::Connected)
        );
        let mut done = publish(&mut fleet, 1);
        fleet.ack(ca, 1);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "b has not acked");
        fleet.remote_update(shared_record("b", "r2", 1, "connected"), t0);
        assert_eq!(done.try_recv().unwrap().acked, ["a", "b"]);
        let listed = fleet.list(1);
        assert_eq!(
            (listed[0].replica.as_str(), listed[1].replica.as_str()),
            ("r1", "r2")
        );

        // Stopping on its replica: not waited for. Gone: it leaves here too,
        // and the grace here never removes it.
        fleet.remote_update(shared_record("b", "r2", 1, "stopping"), t0);
        let mut done = publish(&mut fleet, 2);
        fleet.ack(ca, 2);
        assert_eq!(done.try_recv().unwrap().acked, ["a"]);
        fleet.remote_update(shared_record("b", "r2", 2, "disconnected"), t0);
        assert!(fleet.expire(t0 + GRACE * 10).is_empty());
        let mut done = publish(&mut fleet, 3);
        assert!(fleet.remote_gone("b"));
        fleet.ack(ca, 3);
        assert_eq!(done.try_recv().unwrap().gone, ["b"]);
        assert!(
            !fleet.remote_gone("a"),
            "a local member is this replica's to drop"
        );
    }

    #[test]
    fn a_plane_that_moves_here_is_local_again() {
        let t0 = Instant::now();
        let mut fleet = Fleet::shared(GRACE, "r1");
        fleet.restore(vec![shared_record("b", "r2", 4, "connected")], t0);
        assert_eq!(fleet.list(4)[0].state, "connected");
        let (cb, _rb) = join(&mut fleet, "b", 4, 4, t0);
        // Its old replica's records no longer count while its stream is here.
        assert_eq!(
            fleet.remote_update(shared_record("b", "r2", 4, "disconnected"), t0),
            None
        );
        assert_eq!(fleet.list(4)[0].replica, "r1");
        fleet.disconnect(cb, t0);
        assert_eq!(fleet.expire(t0 + GRACE).len(), 1);
    }

    #[test]
    fn a_member_that_blipped_is_waited_for_and_released_by_its_catch_up_ack() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
        let (cb, _rb) = join(&mut fleet, "b", 0, 0, t0);
        assert!(matches!(
            fleet.disconnect(cb, t0),
            StreamEnd::Disconnected(_)
        ));
        let mut done = publish(&mut fleet, 1);
        fleet.ack(ca, 1);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "b is waited for");
        let (cb2, _rb2) = join(&mut fleet, "b", 0, 1, t0);
        fleet.ack(cb2, 1);
        let report = done.try_recv().unwrap();
        assert_eq!(report.acked, ["a", "b"]);
        assert!(report.lagging.is_empty() && report.gone.is_empty());
    }

    #[test]
    fn a_member_back_with_the_version_is_released_by_its_hello() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
        let mut done = publish(&mut fleet, 1);
        fleet.disconnect(ca, t0);
        let _a2 = join(&mut fleet, "a", 1, 1, t0);
        assert_eq!(done.try_recv().unwrap().acked, ["a"]);
    }

    #[test]
    fn restored_members_hold_the_first_apply_until_they_are_back() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let record = MemberRecord {
            node_id: "a".into(),
            address: "x".into(),
            acked_version: 4,
            last_seen_unix_ms: 1,
            replica: String::new(),
            state: String::new(),
        };
        fleet.restore(vec![record], t0);
        assert_eq!(fleet.list(4)[0].state, "disconnected");
        let mut done = publish(&mut fleet, 5);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty));
        let (a, _ra) = stream();
        let joined = fleet.connect("a", "x".into(), 4, 5, a, t0);
        assert!(!joined.new_member);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "4 is not 5");
        fleet.ack(joined.conn, 5);
        assert_eq!(done.try_recv().unwrap().acked, ["a"]);
    }

    #[test]
    fn a_member_gone_past_the_grace_leaves_and_is_no_longer_waited_for() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
        let (cb, _rb) = join(&mut fleet, "b", 0, 0, t0);
        fleet.disconnect(cb, t0);
        let mut done = publish(&mut fleet, 1);
        fleet.ack(ca, 1);
        assert_eq!(fleet.next_expiry(t0), Some(GRACE));
        assert!(fleet.expire(t0 + GRACE / 2).is_empty());
        let left = fleet.expire(t0 + GRACE);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].node_id, "b");
        let report = done.try_recv().unwrap();
        assert_eq!(
            (report.acked, report.gone),
            (vec!["a".into()], vec!["b".into()])
        );
        let states: Vec<(String, String)> = fleet
            .list(1)
            .into_iter()
            .map(|p| (p.node_id, p.state))
            .collect();
        assert_eq!(
            states,
            [
                ("a".into(), "connected".into()),
                ("b".into(), "gone".into())
            ]
        );
        let mut next = publish(&mut fleet, 2);
        fleet.ack(ca, 2);
        assert_eq!(next.try_recv().unwrap().acked, ["a"]);
        let (b2, _rb2) = stream();
        assert!(fleet.connect("b", "y".into(), 2, 2, b2, t0).new_member);
        assert_eq!(
            fleet.list(2).len(),
            2,
            "a returning member is no longer shown gone"
        );
    }

    #[test]
    fn the_timeout_names_the_silent_members() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let _a = join(&mut fleet, "a", 0, 0, t0);
        let (cb, _rb) = join(&mut fleet, "b", 0, 0, t0);
        let mut done = publish(&mut fleet, 1);
        fleet.nack(cb, 1, "too big".into());
        let report = fleet.timeout(1).unwrap();
        assert_eq!(
            (report.nacked, report.lagging),
            (vec!["b".into()], vec!["a".into()])
        );
        assert_eq!(done.try_recv().unwrap().lagging, ["a"]);
        assert!(fleet.timeout(1).is_none(), "answered once");
    }

    #[test]
    fn an_overlapping_reconnect_keeps_the_member_connected() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let (old, _ra) = join(&mut fleet, "a", 0, 0, t0);
        let (_, mut ra2) = join(&mut fleet, "a", 0, 0, t0);
        assert_eq!(
            fleet.disconnect(old, t0),
            StreamEnd::Open,
            "the new stream is open"
        );
        assert_eq!(fleet.disconnect(old, t0), StreamEnd::Open, "told once");
        let _done = publish(&mut fleet, 1);
        assert!(ra2.try_recv().is_ok(), "pushed on the new stream");
        assert_eq!(fleet.list(1)[0].state, "connected");
    }

    #[test]
    fn a_member_whose_catch_up_carried_the_version_is_not_pushed_it_again() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        // Connected while version 2 was committed but not yet published.
        let (ca, mut ra) = join(&mut fleet, "a", 1, 2, t0);
        fleet.ack(ca, 2);
        let mut done = publish(&mut fleet, 2);
        assert_eq!(done.try_recv().unwrap().acked, ["a"]);
        assert!(ra.try_recv().is_err(), "nothing sent");
    }

    #[test]
    fn a_member_ahead_is_neither_pushed_nor_waited_for() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let (_, mut ra) = join(&mut fleet, "a", 9, 3, t0);
        let mut done = publish(&mut fleet, 4);
        assert!(done.try_recv().is_ok());
        assert!(ra.try_recv().is_err());
    }

    #[test]
    fn a_stopping_member_is_released_from_waits_and_leaves_when_its_stream_ends() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
        let (cb, mut rb) = join(&mut fleet, "b", 0, 0, t0);
        let mut done = publish(&mut fleet, 1);
        fleet.ack(ca, 1);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "b is waited for");
        assert_eq!(fleet.stopping(cb).as_deref(), Some("b"));
        let report = done.try_recv().unwrap();
        assert_eq!(
            (report.acked, report.stopping),
            (vec!["a".into()], vec!["b".into()])
        );
        assert_eq!(fleet.list(1)[1].state, "stopping");

        // Still sent what follows while it drains, but not waited for.
        let mut done = publish(&mut fleet, 2);
        assert!(rb.try_recv().is_ok(), "b still gets pushes");
        fleet.ack(ca, 2);
        assert_eq!(done.try_recv().unwrap().acked, ["a"]);

        let StreamEnd::Stopped(record) = fleet.disconnect(cb, t0) else {
            panic!("a stopping plane's end is a stop");
        };
        assert_eq!(record.node_id, "b");
        assert_eq!(fleet.next_expiry(t0), None, "no grace to wait out");
        let states: Vec<String> = fleet.list(2).into_iter().map(|m| m.state).collect();
        assert_eq!(states, ["connected", "stopped"]);
    }

    #[test]
    fn an_old_process_stopping_beside_a_new_one_with_the_same_node_id_keeps_it_waited_for() {
        let t0 = Instant::now();
        let mut fleet = Fleet::new(GRACE);
        let (old, _ro) = join(&mut fleet, "a", 0, 0, t0);
        let (new, _rn) = join(&mut fleet, "a", 0, 0, t0);
        assert_eq!(fleet.stopping(old), None, "the new process still serves");
        assert_eq!(fleet.list(0)[0].state, "connected");
        let mut done = publish(&mut fleet, 1);
        assert_eq!(fleet.disconnect(old, t0), StreamEnd::Open);
        assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "a is waited for");
        fleet.ack(new, 1);
        assert_eq!(done.try_recv().unwrap().acked, ["a"]);
    }
}
