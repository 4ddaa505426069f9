//! What every session actor and connection shares: the directory, the
//! committer, telemetry and the command path to data planes, and settings.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use portico_proto::backend_policy::BackendPolicy;

use super::Directory;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 10_000,
            connections_per_ip: 1_000,
            sessions: 10_000,
            routes_per_session: 10_000,
            line: Duration::from_secs(30),
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

/// What session actors and connections share.
pub struct Shared {
    pub directory: Directory,
    pub committer: Addr<Committer>,
    pub telemetry: Telemetry,
    pub planes: PlaneCommands,
    pub settings: SessionSettings,
    /// Registry tokens, when `--registry-auth` is set.
    pub auth: Option<Arc<RegistryAuth>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::observe::metrics::Metrics>,
}
