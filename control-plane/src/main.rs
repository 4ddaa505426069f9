//! portico-cp: the control plane. Services register over the line protocol;
//! data planes dial the gRPC port and receive every committed version.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use portico_cp::server::{self, Config, Limits};
use portico_cp::store::{self, state_file};
use portico_proto::backend_policy::{BackendPolicy, DEFAULT_DENY};

#[derive(Debug, Parser)]
#[command(
    name = "portico-cp",
    version,
    about = "Portico control plane",
    args_override_self = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Tool>,
    /// Address of the registry line protocol listener.
    #[arg(
        long,
        env = "PORTICO_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8181"
    )]
    registry_listen: String,
    /// Address of the gRPC listener data planes dial.
    #[arg(long, env = "PORTICO_GRPC_LISTEN", default_value = "127.0.0.1:8182")]
    grpc_listen: String,
    /// Address of the admin HTTP listener (/healthz, /ready).
    #[arg(long, env = "PORTICO_ADMIN_LISTEN", default_value = "127.0.0.1:8183")]
    admin_listen: String,
    /// Directory for the control plane's state.
    #[arg(long, env = "PORTICO_DATA_DIR", default_value = "./portico-data")]
    data_dir: PathBuf,
    /// Where the state is kept: `embedded` (redb in --data-dir) or `etcd`.
    #[arg(long, env = "PORTICO_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,
    /// etcd client urls (comma-separated), with --store etcd.
    #[arg(
        long,
        env = "PORTICO_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd_endpoints: Vec<String>,
    /// CA (PEM) trusted for etcd's certificate, with https endpoints
    /// (default: the system's roots).
    #[arg(long, env = "PORTICO_ETCD_TLS_CA")]
    etcd_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth, with
    /// --etcd-tls-key.
    #[arg(long, env = "PORTICO_ETCD_TLS_CERT", requires = "etcd_tls_key")]
    etcd_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "PORTICO_ETCD_TLS_KEY", requires = "etcd_tls_cert")]
    etcd_tls_key: Option<PathBuf>,
    /// The key prefix of this control plane's state in etcd.
    #[arg(long, env = "PORTICO_ETCD_PREFIX", default_value = "/portico")]
    etcd_prefix: String,
    /// This replica's name among those sharing the etcd prefix (default:
    /// host name and process id).
    #[arg(long, env = "PORTICO_REPLICA_ID")]
    replica_id: Option<String>,
    /// The gRPC address other replicas dial to reach this one (default: the
    /// address --grpc-listen bound; set it when that is 0.0.0.0).
    #[arg(long, env = "PORTICO_ADVERTISE_GRPC")]
    advertise_grpc: Option<String>,
    #[command(flatten)]
    tls: portico_proto::tls::TlsFiles,
    /// How long a session without a home connection keeps its routes, e.g. 60s.
    #[arg(long, env = "PORTICO_SESSION_GRACE", default_value = "60s", value_parser = parse_duration)]
    session_grace: Duration,
    /// How long CONFIG_APPLY waits for data planes to acknowledge, e.g. 2s.
    #[arg(long, env = "PORTICO_APPLY_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    apply_timeout: Duration,
    /// How long a data plane that lost its stream stays in the fleet: applies
    /// wait for it meanwhile (also after a restart), e.g. 10s.
    #[arg(long, env = "PORTICO_FLEET_GRACE", default_value = "10s", value_parser = parse_duration)]
    fleet_grace: Duration,
    /// Staged changes untouched this long are discarded, e.g. 30m.
    #[arg(long, env = "PORTICO_STAGED_TTL", default_value = "30m", value_parser = parse_duration)]
    staged_ttl: Duration,
    /// How long MAINT_ENTER/MAINT_EXIT wait for the probed backend, e.g. 60s.
    #[arg(long, env = "PORTICO_MAINTENANCE_PROBE_LIMIT", default_value = "60s", value_parser = parse_duration)]
    maintenance_probe_limit: Duration,
    /// How long sessions restored after a restart wait for RECONNECT, e.g. 5m.
    #[arg(long, env = "PORTICO_RESTORE_GRACE", default_value = "5m", value_parser = parse_duration)]
    restore_grace: Duration,
    /// For measurements only: commits are not flushed to disk, so OK no
    /// longer means durable.
    #[arg(long, env = "PORTICO_UNSAFE_NO_FSYNC")]
    unsafe_no_fsync: bool,
    /// Discard the stored state and start empty (removes every route from the fleet).
    #[arg(long, env = "PORTICO_RESET_STATE")]
    reset_state: bool,
    /// JSON file of registry tokens (docs/SECURITY.md); REGISTER must then
    /// carry a valid "token" in its metadata. Reloaded on SIGHUP and change.
    #[arg(long, env = "PORTICO_REGISTRY_AUTH")]
    registry_auth: Option<PathBuf>,
    /// Backend addresses refused (CIDRs, comma-separated); replaces the
    /// default of link-local and unspecified addresses; "" denies none.
    #[arg(long, env = "PORTICO_BACKEND_DENY", value_delimiter = ',', default_values_t = DEFAULT_DENY.map(String::from))]
    backend_deny: Vec<String>,
    /// When given, only these backend addresses (CIDRs, comma-separated).
    #[arg(long, env = "PORTICO_BACKEND_ALLOW", value_delimiter = ',')]
    backend_allow: Vec<String>,
    /// Registry connections at once; more are refused.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Registry connections at once from one IP address.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    max_connections_per_ip: usize,
    /// Sessions at once.
    #[arg(long, env = "PORTICO_MAX_SESSIONS", default_value_t = 10_000)]
    max_sessions: usize,
    /// Routes one session may have (active and staged).
    #[arg(long, env = "PORTICO_MAX_ROUTES_PER_SESSION", default_value_t = 10_000)]
    max_routes_per_session: usize,
    /// A registry connection holding an unfinished line this long is closed.
    #[arg(long, env = "PORTICO_LINE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    line_timeout: Duration,
    /// Serve the certificate pairs DIR/<name>/fullchain.pem and
    /// DIR/<name>/privkey.pem (certbot's layout); the directory is watched.
    #[arg(long, env = "PORTICO_CERT_DIR")]
    cert_dir: Option<PathBuf>,
    /// ACME directory URL: obtain certificates (HTTP-01) for every routed
    /// host no --cert-dir pair covers.
    #[arg(long, env = "PORTICO_ACME_DIRECTORY", requires = "acme_email")]
    acme_directory: Option<String>,
    /// Contact address of the ACME account.
    #[arg(long, env = "PORTICO_ACME_EMAIL")]
    acme_email: Option<String>,
    /// Trust only this CA (PEM) for the ACME server's HTTPS: private and test CAs.
    #[arg(long, env = "PORTICO_ACME_CA_ROOT")]
    acme_ca_root: Option<PathBuf>,
    /// Renew ACME certificates this long before they expire (e.g. 30d, 720h).
    #[arg(long, env = "PORTICO_ACME_RENEW_BEFORE", default_value = "30d", value_parser = humantime::parse_duration)]
    acme_renew_before: Duration,
    /// Arbiters (threads) that run sessions and connections; default: one per core.
    #[arg(long, env = "PORTICO_SESSION_THREADS")]
    session_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Embedded,
    Etcd,
}

/// Offline tools on the data dir (the control plane must be stopped).
#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// Print the whole stored state as JSON on standard output.
    Export,
    /// Replace the stored state with the JSON read from standard input.
    Import,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    portico_proto::duration::parse_duration(raw)
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit code when the state store cannot be written (EX_SOFTWARE).
const EXIT_STORE_FAILED: i32 = 70;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let store: Arc<dyn store::Store> = match args.store {
        StoreKind::Embedded => {
            if args.reset_state {
                let file = args.data_dir.join(store::RedbStore::FILE);
                if file.exists() {
                    std::fs::remove_file(&file)
                        .with_context(|| format!("removing {}", file.display()))?;
                    tracing::warn!(file = %file.display(), "stored state discarded (--reset-state)");
                }
            }
            Arc::new(store::RedbStore::open(
                &args.data_dir,
                !args.unsafe_no_fsync,
            )?)
        }
        StoreKind::Etcd => {
            anyhow::ensure!(
                !args.reset_state,
                "--reset-state works on the embedded store only; delete the etcd prefix {} instead",
                args.etcd_prefix
            );
            let tls = store::EtcdTls {
                ca: args.etcd_tls_ca.clone(),
                cert: args.etcd_tls_cert.clone(),
                key: args.etcd_tls_key.clone(),
            };
            Arc::new(store::EtcdStore::connect(
                &args.etcd_endpoints,
                &args.etcd_prefix,
                &args.replica(),
                &tls,
            )?)
        }
    };
    match args.command {
        Some(Tool::Export) => state_file::export(store.as_ref(), std::io::stdout().lock()),
        Some(Tool::Import) => state_file::import(store.as_ref(), std::io::stdin().lock()),
        None => {
            match actix_rt::System::new().block_on(server::run(args.config()?, store)) {
                // Fail-stop: data planes keep serving while it is restarted.
                Err(e) if e.is::<store::StoreError>() => {
                    tracing::error!(error = %e, "stopping: the state store cannot be written");
                    std::process::exit(EXIT_STORE_FAILED)
                }
                other => other,
            }
        }
    }
}

impl Args {
    /// `--replica-id`, else host name and process id.
    fn replica(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "portico".into());
            format!("{host}-{}", std::process::id())
        })
    }

    fn config(&self) -> anyhow::Result<Config> {
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
            },
            cert_dir: self.cert_dir.clone(),
            acme: self.acme_directory.as_ref().map(|directory| {
                portico_cp::certs::acme::AcmeConfig {
                    directory: directory.clone(),
                    email: self.acme_email.clone().unwrap_or_default(),
                    ca_root: self.acme_ca_root.clone(),
                    renew_before: self.acme_renew_before,
                }
            }),
        })
    }
}
