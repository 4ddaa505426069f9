//! What every session actor and connection shares: the directory, the
//! committer, telemetry and the command path to data planes, and settings.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use portico_proto::backend_policy::BackendPolicy;

use super::Directory;
use crate::auth::RegistryAuth;
use crate::committer::Committer;
use crate::plane_commands::PlaneCommands;
use crate::server::Limits;
use crate::telemetry::Telemetry;

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
    pub metrics: Arc<crate::metrics::Metrics>,
}
