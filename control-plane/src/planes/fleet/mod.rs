//! The fleet: every data plane that has connected, its streams, the version
//! it acknowledged, and the CONFIG_APPLY waiters it releases. A member that
//! lost its stream is waited for until the fleet grace passes; one that said
//! it stops is not, and leaves when its stream ends. Pure: the publisher actor
//! feeds it events and the clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use portico_proto::time::from_unix_ms;
use portico_proto::v1;
use tokio::sync::oneshot;

use crate::store::MemberRecord;

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

mod member;

use member::{Member, Remote, Stream};
pub use member::{MemberState, PushSender};

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
        member.features = record.features;
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
    /// What member `node_id` said it can do in its hello.
    pub fn set_features(&mut self, node_id: &str, features: Vec<String>) {
        if let Some(member) = self.members.get_mut(node_id) {
            member.features = features;
        }
    }

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
mod tests;
