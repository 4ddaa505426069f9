//! What every session actor is handed: the committer, telemetry, the command
//! path to data planes, registry tokens, metrics, route ids, the settings,
//! and the way out of the directory when it ends.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use portico_proto::backend_policy::BackendPolicy;

use super::route_ids::RouteIds;
use super::state::Identity;
use crate::config::committer::Committer;
use crate::observe::telemetry::Telemetry;
use crate::planes::plane_commands::PlaneCommands;
use crate::registry::auth::RegistryAuth;

/// What one client may take of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections: usize,
    pub connections_per_ip: usize,
    pub sessions: usize,
    pub routes_per_session: usize,
    /// A connection holding an unfinished line this long is closed.
    pub line: Duration,
    /// Invalid session ids one address may send per 10 s before its session
    /// commands are refused for the rest of the window.
    pub invalid_sessions_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 10_000,
            connections_per_ip: 1_000,
            sessions: 10_000,
            routes_per_session: 10_000,
            line: Duration::from_secs(30),
            invalid_sessions_per_ip: crate::registry::invalid_sessions::LIMIT,
        }
    }
}

/// Settings every session shares.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// How long a session without a home connection keeps serving.
    pub grace: Duration,
    /// Staged changes untouched this long are discarded.
    pub staged_ttl: Duration,
    /// How long MAINT_ENTER/EXIT probe before giving up.
    pub maintenance_probe_limit: Duration,
    /// Which backend addresses may be used.
    pub backend_policy: BackendPolicy,
    pub limits: Limits,
}

/// Takes an ended session out of the directory (by id and identity).
pub type Leave = Box<dyn Fn(&str, &Identity) + Send + Sync>;

/// What a session actor needs besides its own state.
pub struct SessionEnv {
    pub committer: Addr<Committer>,
    pub telemetry: Telemetry,
    pub planes: PlaneCommands,
    pub settings: SessionSettings,
    /// Registry tokens, when `--registry-auth` is set.
    pub auth: Option<Arc<RegistryAuth>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::observe::metrics::Metrics>,
    pub route_ids: std::sync::Arc<RouteIds>,
    pub leave: Leave,
}
