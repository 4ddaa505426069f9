//! One data plane of the fleet: its streams, what it acknowledged, and its
//! state as operators see it (or as another replica shared it).

use std::time::{Instant, SystemTime};

use portico_proto::time::unix_ms;
use portico_proto::v1;

use tokio::sync::mpsc;

use crate::store::MemberRecord;

/// The stream a data plane receives its pushes on.
pub type PushSender = mpsc::UnboundedSender<Result<v1::ControlPlaneMessage, tonic::Status>>;

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

pub(super) struct Member {
    pub(super) node_id: String,
    pub(super) address: String,
    /// Start of the current stream, or of the last one; `None` when restored
    /// from the store and not back yet.
    pub(super) connected_since: Option<SystemTime>,
    /// Last time a stream of it was open (wall clock, for operators and the store).
    pub(super) last_seen: SystemTime,
    /// The same moment on the monotonic clock, for the grace.
    pub(super) seen: Instant,
    pub(super) acked: u64,
    pub(super) last_nack: Option<(u64, String)>,
    /// It holds a newer version than this control plane knows (this control
    /// plane lost its state); it is left alone rather than pushed backwards.
    pub(super) ahead: bool,
    /// Open streams (more than one only while a reconnect overlaps the old
    /// stream's end, or when two processes share a node id, as during an
    /// upgrade on one host).
    pub(super) streams: Vec<Stream>,
    /// It left because it stopped (shown as "stopped" rather than "gone").
    pub(super) stopped: bool,
    /// Its stream is held by another replica (docs/HA.md), which shares
    /// its record: what that replica last said.
    pub(super) remote: Option<Remote>,
    /// What it said it can do in its hello.
    pub(super) features: Vec<String>,
}

pub(super) struct Remote {
    pub(super) replica: String,
    pub(super) state: MemberState,
}

pub(super) struct Stream {
    pub(super) conn: u64,
    pub(super) tx: PushSender,
    /// The process behind it said it stops.
    pub(super) stopping: bool,
}

impl Member {
    pub(super) fn new(node_id: &str, now: Instant) -> Member {
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
            features: Vec::new(),
        }
    }

    pub(super) fn state(&self) -> MemberState {
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

    pub(super) fn record(&self) -> MemberRecord {
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
            features: self.features.clone(),
        }
    }

    pub(super) fn info(&self, version: u64, state: MemberState, here: &str) -> v1::DataPlaneInfo {
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
            features: self.features.clone(),
        }
    }
}

impl MemberState {
    /// A state another replica shared; `None` for one never shared.
    pub(super) fn shared(raw: &str) -> Option<MemberState> {
        match raw {
            "" | "connected" => Some(MemberState::Connected),
            "disconnected" => Some(MemberState::Disconnected),
            "stopping" => Some(MemberState::Stopping),
            _ => None,
        }
    }
}
