//! `portico-cp`'s flags, grouped by topic (`--help` and
//! `docs/reference/flags.md` show the same groups), and the server
//! configuration they make.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use portico_proto::backend_policy::{BackendPolicy, DEFAULT_DENY};

use crate::server::{Config, Limits};

#[derive(Debug, Parser)]
#[command(
    name = "portico-cp",
    version,
    about = "Portico control plane",
    args_override_self = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Tool>,
    /// Address of the registry line protocol listener.
    #[arg(
        long,
        env = "PORTICO_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8181",
        help_heading = "Listeners"
    )]
    pub registry_listen: String,
    /// Address of the gRPC listener data planes dial.
    #[arg(
        long,
        env = "PORTICO_GRPC_LISTEN",
        default_value = "127.0.0.1:8182",
        help_heading = "Listeners"
    )]
    pub grpc_listen: String,
    /// Address of the admin HTTP listener (/healthz, /ready).
    #[arg(
        long,
        env = "PORTICO_ADMIN_LISTEN",
        default_value = "127.0.0.1:8183",
        help_heading = "Listeners"
    )]
    pub admin_listen: String,
    /// Directory for the control plane's state.
    #[arg(
        long,
        env = "PORTICO_DATA_DIR",
        default_value = "./portico-data",
        help_heading = "Store"
    )]
    pub data_dir: PathBuf,
    /// Where the state is kept: `embedded` (redb in --data-dir) or `etcd`.
    #[arg(long, env = "PORTICO_STORE", value_enum, default_value_t = StoreKind::Embedded, help_heading = "Store")]
    pub store: StoreKind,
    /// etcd client urls (comma-separated), with --store etcd.
    #[arg(
        long,
        env = "PORTICO_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        help_heading = "Store"
    )]
    pub etcd_endpoints: Vec<String>,
    /// CA (PEM) trusted for etcd's certificate, with https endpoints
    /// (default: the system's roots).
    #[arg(long, env = "PORTICO_ETCD_TLS_CA", help_heading = "Store")]
    pub etcd_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth, with
    /// --etcd-tls-key.
    #[arg(
        long,
        env = "PORTICO_ETCD_TLS_CERT",
        requires = "etcd_tls_key",
        help_heading = "Store"
    )]
    pub etcd_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "PORTICO_ETCD_TLS_KEY",
        requires = "etcd_tls_cert",
        help_heading = "Store"
    )]
    pub etcd_tls_key: Option<PathBuf>,
    /// The key prefix of this control plane's state in etcd.
    #[arg(
        long,
        env = "PORTICO_ETCD_PREFIX",
        default_value = "/portico",
        help_heading = "Store"
    )]
    pub etcd_prefix: String,
    /// This replica's name among those sharing the etcd prefix (default:
    /// host name and process id).
    #[arg(long, env = "PORTICO_REPLICA_ID", help_heading = "Store")]
    pub replica_id: Option<String>,
    /// The gRPC address other replicas dial to reach this one (default: the
    /// address --grpc-listen bound; set it when that is 0.0.0.0).
    #[arg(long, env = "PORTICO_ADVERTISE_GRPC", help_heading = "Listeners")]
    pub advertise_grpc: Option<String>,
    #[command(flatten)]
    pub tls: portico_proto::tls::TlsFiles,
    /// How long a session without a home connection keeps its routes, e.g. 60s.
    #[arg(long, env = "PORTICO_SESSION_GRACE", default_value = "60s", value_parser = parse_duration, help_heading = "Sessions")]
    pub session_grace: Duration,
    /// How long CONFIG_APPLY waits for data planes to acknowledge, e.g. 2s.
    #[arg(long, env = "PORTICO_APPLY_TIMEOUT", default_value = "2s", value_parser = parse_duration, help_heading = "Sessions")]
    pub apply_timeout: Duration,
    /// How long a data plane that lost its stream stays in the fleet: applies
    /// wait for it meanwhile (also after a restart), e.g. 10s.
    #[arg(long, env = "PORTICO_FLEET_GRACE", default_value = "10s", value_parser = parse_duration, help_heading = "Sessions")]
    pub fleet_grace: Duration,
    /// Staged changes untouched this long are discarded, e.g. 30m.
    #[arg(long, env = "PORTICO_STAGED_TTL", default_value = "30m", value_parser = parse_duration, help_heading = "Sessions")]
    pub staged_ttl: Duration,
    /// How long MAINT_ENTER/MAINT_EXIT wait for the probed backend, e.g. 60s.
    #[arg(long, env = "PORTICO_MAINTENANCE_PROBE_LIMIT", default_value = "60s", value_parser = parse_duration, help_heading = "Sessions")]
    pub maintenance_probe_limit: Duration,
    /// How long sessions restored after a restart wait for RECONNECT, e.g. 5m.
    #[arg(long, env = "PORTICO_RESTORE_GRACE", default_value = "5m", value_parser = parse_duration, help_heading = "Sessions")]
    pub restore_grace: Duration,
    /// For measurements only: commits are not flushed to disk, so OK no
    /// longer means durable.
    #[arg(long, env = "PORTICO_UNSAFE_NO_FSYNC", help_heading = "Store")]
    pub unsafe_no_fsync: bool,
    /// Discard the stored state and start empty (removes every route from the fleet).
    #[arg(long, env = "PORTICO_RESET_STATE", help_heading = "Store")]
    pub reset_state: bool,
    /// JSON file of registry tokens (docs/SECURITY.md); REGISTER must then
    /// carry a valid "token" in its metadata. Reloaded on SIGHUP and change.
    #[arg(long, env = "PORTICO_REGISTRY_AUTH", help_heading = "Security")]
    pub registry_auth: Option<PathBuf>,
    /// Backend addresses refused (CIDRs, comma-separated); replaces the
    /// default of link-local and unspecified addresses; "" denies none.
    #[arg(long, env = "PORTICO_BACKEND_DENY", value_delimiter = ',', default_values_t = DEFAULT_DENY.map(String::from), help_heading = "Security")]
    pub backend_deny: Vec<String>,
    /// When given, only these backend addresses (CIDRs, comma-separated).
    #[arg(
        long,
        env = "PORTICO_BACKEND_ALLOW",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub backend_allow: Vec<String>,
    /// Registry connections at once; more are refused.
    #[arg(
        long,
        env = "PORTICO_MAX_CONNECTIONS",
        default_value_t = 10_000,
        help_heading = "Limits"
    )]
    pub max_connections: usize,
    /// Registry connections at once from one IP address.
    #[arg(
        long,
        env = "PORTICO_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1_000,
        help_heading = "Limits"
    )]
    pub max_connections_per_ip: usize,
    /// Sessions at once.
    #[arg(
        long,
        env = "PORTICO_MAX_SESSIONS",
        default_value_t = 10_000,
        help_heading = "Limits"
    )]
    pub max_sessions: usize,
    /// Routes one session may have (active and staged).
    #[arg(
        long,
        env = "PORTICO_MAX_ROUTES_PER_SESSION",
        default_value_t = 10_000,
        help_heading = "Limits"
    )]
    pub max_routes_per_session: usize,
    /// A registry connection holding an unfinished line this long is closed.
    #[arg(long, env = "PORTICO_LINE_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    pub line_timeout: Duration,
    /// Commands with an unknown session id one address may send in 10 s;
    /// past it, that address's session commands are refused for the rest of
    /// the 10 s (against guessing ids; docs/SECURITY.md).
    #[arg(long, env = "PORTICO_MAX_INVALID_SESSIONS_PER_IP", default_value_t = crate::registry::invalid_sessions::LIMIT, help_heading = "Limits")]
    pub max_invalid_sessions_per_ip: u32,
    /// Serve the sites of go-proxy's site files: every *.yaml / *.yml file in
    /// DIR is one site, applied like a session's change; the folder is
    /// watched (docs/SITES.md).
    #[arg(long, env = "PORTICO_SITES", help_heading = "Sites")]
    pub sites: Option<PathBuf>,
    /// The global site file: default headers and options, unknown hosts,
    /// certificates; watched (docs/SITES.md).
    #[arg(long, env = "PORTICO_GLOBAL", help_heading = "Sites")]
    pub global: Option<PathBuf>,
    /// Serve the certificate pairs DIR/<name>/fullchain.pem and
    /// DIR/<name>/privkey.pem (certbot's layout); the directory is watched.
    #[arg(long, env = "PORTICO_CERT_DIR", help_heading = "Certificates")]
    pub cert_dir: Option<PathBuf>,
    /// ACME directory URL: obtain certificates (HTTP-01) for every routed
    /// host no --cert-dir pair covers.
    #[arg(
        long,
        env = "PORTICO_ACME_DIRECTORY",
        requires = "acme_email",
        help_heading = "Certificates"
    )]
    pub acme_directory: Option<String>,
    /// Contact address of the ACME account.
    #[arg(long, env = "PORTICO_ACME_EMAIL", help_heading = "Certificates")]
    pub acme_email: Option<String>,
    /// Trust only this CA (PEM) for the ACME server's HTTPS: private and test CAs.
    #[arg(long, env = "PORTICO_ACME_CA_ROOT", help_heading = "Certificates")]
    pub acme_ca_root: Option<PathBuf>,
    /// Renew ACME certificates this long before they expire (e.g. 30d, 720h).
    #[arg(long, env = "PORTICO_ACME_RENEW_BEFORE", default_value = "30d", value_parser = humantime::parse_duration, help_heading = "Certificates")]
    pub acme_renew_before: Duration,
    /// Arbiters (threads) that run sessions and connections; default: one per core.
    #[arg(long, env = "PORTICO_SESSION_THREADS", help_heading = "Sessions")]
    pub session_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Embedded,
    Etcd,
}

/// Offline tools on the data dir (the control plane must be stopped).
#[derive(Debug, clap::Subcommand)]
pub enum Tool {
    /// Print the whole stored state as JSON on standard output.
    Export,
    /// Replace the stored state with the JSON read from standard input.
    Import,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    portico_proto::duration::parse_duration(raw)
}

impl Args {
    /// `--replica-id`, else host name and process id.
    pub fn replica(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "portico".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(Config {
            replica_id: self.replica(),
            advertise_grpc: self.advertise_grpc.clone(),
            registry_listen: self.registry_listen.clone(),
            grpc_listen: self.grpc_listen.clone(),
            admin_listen: self.admin_listen.clone(),
            data_dir: self.data_dir.clone(),
            tls: self.tls.clone(),
            session_grace: self.session_grace,
            apply_timeout: self.apply_timeout,
            fleet_grace: self.fleet_grace,
            staged_ttl: self.staged_ttl,
            maintenance_probe_limit: self.maintenance_probe_limit,
            restore_grace: self.restore_grace,
            session_threads: self
                .session_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            registry_auth: self.registry_auth.clone(),
            backend_policy: BackendPolicy::new(&self.backend_deny, &self.backend_allow)
                .context("--backend-deny/--backend-allow")?,
            limits: Limits {
                connections: self.max_connections.max(1),
                connections_per_ip: self.max_connections_per_ip.max(1),
                sessions: self.max_sessions.max(1),
                routes_per_session: self.max_routes_per_session.max(1),
                line: self.line_timeout,
                invalid_sessions_per_ip: self.max_invalid_sessions_per_ip.max(1),
            },
            cert_dir: self.cert_dir.clone(),
            sites: self.sites.clone(),
            global: self.global.clone(),
            acme: self
                .acme_directory
                .as_ref()
                .map(|directory| crate::certs::acme::AcmeConfig {
                    directory: directory.clone(),
                    email: self.acme_email.clone().unwrap_or_default(),
                    ca_root: self.acme_ca_root.clone(),
                    renew_before: self.acme_renew_before,
                }),
        })
    }
}
