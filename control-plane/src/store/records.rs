//! What the store keeps, in the shape it is kept: a session with its active
//! configuration, and a member of the data-plane fleet. The conversions
//! from and to the live state belong to their owners (`session/record.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `None` is `ALL`, else a route number.
pub type TargetRecord = Option<u64>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub id: u64,
    pub domains: Vec<String>,
    pub path: String,
    pub backend_url: String,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session's key (SHA-256 of its id), never the id; stores written
    /// before keys held the id here, and are migrated at start.
    pub id: String,
    pub service: String,
    pub instance: String,
    pub maintenance_port: u16,
    pub metadata: Map<String, Value>,
    pub peer_ip: Option<String>,
    pub connected_at_ms: i64,
    /// With registry auth: the SHA-256 of its token (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    pub last_apply_ms: Option<i64>,
    pub routes: Vec<RouteRecord>,
    /// (target, name as given, value)
    pub headers: Vec<(TargetRecord, String, String)>,
    /// (target, key, canonical value)
    pub options: Vec<(TargetRecord, String, String)>,
    /// (route, path, interval ms, timeout ms)
    pub health: Vec<(u64, String, u64, u64)>,
    /// (target, requests, window ms)
    pub ratelimit: Vec<(TargetRecord, u64, u64)>,
    /// (target, threshold, timeout ms, half-open requests)
    pub breaker: Vec<(TargetRecord, u32, u64, u32)>,
    /// (route, entered at ms)
    pub maintenance: Vec<(u64, i64)>,
    pub maintenance_backend: Option<String>,
    /// (started at ms, duration ms)
    pub drain: Option<(i64, u64)>,
    /// With replicas: the replica that runs the session's actor (empty with
    /// one control plane).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// The event types it subscribed to (`SUBSCRIBE`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
}

/// A data plane of the fleet as stored, so that applies after a restart
/// wait for the data planes that were there before it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberRecord {
    pub node_id: String,
    pub address: String,
    pub acked_version: u64,
    pub last_seen_unix_ms: i64,
    /// With replicas: the replica that holds its stream (empty with one
    /// control plane, and in records written before replicas).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// "connected", "disconnected" or "stopping", as its replica sees it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// What it said it can do (`DataPlaneHello.features`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// A live control-plane replica, as it announces itself in a shared store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaRecord {
    pub id: String,
    pub registry: String,
    pub grpc: String,
    pub admin: String,
    pub started_unix_ms: i64,
}
