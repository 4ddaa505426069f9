//! What the proxy and the admin listener read, shared across threads: the
//! current route table, certificates, ACME answers and applied version, and
//! the process-wide runtime state beside them.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use arc_swap::ArcSwap;
use portico_proto::v1;

use crate::backends::runtime::Registry;
use crate::config::table::RouteTable;
use crate::edge::certs::CertStore;

/// What the proxy and the admin listener read, shared across threads.
#[derive(Default)]
pub struct Live {
    pub table: ArcSwap<RouteTable>,
    /// The certificates the TLS listener serves.
    pub certs: Arc<ArcSwap<CertStore>>,
    /// ACME HTTP-01 answers: token -> key authorization.
    pub challenges: crate::filters::acme_challenge::Challenges,
    pub version: AtomicU64,
    /// A configuration from the control plane is applied (not only a cached one).
    pub ready: AtomicBool,
    /// Serving a configuration read from the snapshot cache, not yet
    /// confirmed by the control plane.
    pub from_cache: AtomicBool,
    pub registry: Registry,
    /// Stats of routes that were removed, for the next telemetry report.
    pub leftover_stats: parking_lot::Mutex<Vec<v1::RouteStats>>,
    /// Health probe tasks running now.
    pub probes: std::sync::atomic::AtomicUsize,
    /// Stopping or not, and the requests in flight.
    pub lifecycle: Arc<crate::edge::lifecycle::Lifecycle>,
    /// Client connections open and refused.
    pub connections: Arc<crate::edge::connections::ConnCounts>,
    /// Looks backend names up.
    pub dns: crate::backends::dns::Dns,
    /// Requests that matched no route, for `/metrics`.
    pub unrouted: crate::observe::route_metrics::RouteMetrics,
    /// Requests from a trusted proxy whose forwarding header did not parse.
    pub malformed_client: AtomicU64,
    /// What the access log may keep about clients, unless a route says.
    pub pii: PiiDefaults,
    /// What the global site file sets for every route.
    pub defaults: ArcSwap<crate::config::policy::Defaults>,
    /// `--access-log`, when set.
    pub access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
    /// The last `/metrics` page and when it was rendered.
    pub metrics_page: parking_lot::Mutex<Option<(std::time::Instant, Arc<String>)>>,
}

/// `--access-log-pii` and the key of `pii_ip=hash` (`--pii-key-file`, or
/// random for this process).
#[derive(Default)]
pub struct PiiDefaults {
    pub defaults: crate::observe::pii::Pii,
    pub key: Vec<u8>,
}
