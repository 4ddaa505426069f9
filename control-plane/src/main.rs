//! portico-cp: the control plane. Services register over the line protocol;
//! data planes dial the gRPC port and receive every committed version.

mod admin;
mod committer;
mod directory;
mod fleet;
mod global;
mod grpc;
mod history;
mod payload;
mod protocol;
mod publisher;
mod registry;
mod session;
mod state_file;
mod store;
mod telemetry;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use clap::Parser;
use portico_proto::v1::data_plane_service_server::DataPlaneServiceServer;
use portico_proto::v1::operator_service_server::OperatorServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::committer::Committer;
use crate::directory::{Directory, SessionSettings, Shared};
use crate::global::GlobalConfig;
use crate::publisher::Publisher;

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
    /// Arbiters (threads) that run sessions and connections; default: one per core.
    #[arg(long, env = "PORTICO_SESSION_THREADS")]
    session_threads: Option<usize>,
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
    if args.reset_state {
        let file = args.data_dir.join(store::RedbStore::FILE);
        if file.exists() {
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
            tracing::warn!(file = %file.display(), "stored state discarded (--reset-state)");
        }
    }
    let store = store::RedbStore::open(&args.data_dir, !args.unsafe_no_fsync)?;
    match args.command {
        Some(Tool::Export) => state_file::export(&store, std::io::stdout().lock()),
        Some(Tool::Import) => state_file::import(&store, std::io::stdin().lock()),
        None => actix_rt::System::new().block_on(run(args, Arc::new(store))),
    }
}

async fn run(args: Args, store: Arc<dyn store::Store>) -> anyhow::Result<()> {
    let loaded = store.load()?;
    let sessions = loaded
        .sessions
        .iter()
        .map(|r| r.restore())
        .collect::<Result<Vec<_>, _>>()
        .context("restoring sessions")?;
    let mut global = GlobalConfig::new(loaded.version);
    for s in &sessions {
        global.restore(&s.identity.id, &s.identity.service, s.active_proto(&s.ops));
    }
    let routes: Vec<_> = global.all_routes().cloned().collect();
    info!(
        version = loaded.version,
        sessions = sessions.len(),
        routes = routes.len(),
        data_planes = loaded.fleet.len(),
        "state restored"
    );

    let registry = bind(&args.registry_listen, "registry").await?;
    let grpc = bind(&args.grpc_listen, "grpc").await?;
    let admin = bind(&args.admin_listen, "admin").await?;

    let publisher = Publisher::new(
        args.apply_timeout,
        args.fleet_grace,
        loaded.version,
        routes,
        loaded.fleet,
        store.clone(),
    )
    .start();
    let committer = Committer::new(global, publisher.clone(), store.clone()).start();
    let threads = args
        .session_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
    let shared = Arc::new(Shared {
        directory: Directory::new(
            arbiters.iter().map(Arbiter::handle).collect(),
            loaded.route_reserved,
            store.clone(),
        ),
        committer,
        telemetry: telemetry::Telemetry::new(publisher.clone()),
        settings: SessionSettings {
            grace: args.session_grace,
            staged_ttl: args.staged_ttl,
            maintenance_probe_limit: args.maintenance_probe_limit,
        },
    });

    for state in sessions {
        Directory::restore(&shared, state, args.restore_grace);
    }

    let ready = Arc::new(AtomicBool::new(false));
    actix_rt::spawn(admin::serve(admin, ready.clone()));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DataPlaneServiceServer<grpc::DataPlaneApi>>()
        .await;
    health
        .set_serving::<OperatorServiceServer<grpc::OperatorApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(portico_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let tls = &args.tls;
    let mut builder = tonic::transport::Server::builder();
    if let Some(config) = tls.server()? {
        builder = builder.tls_config(config).context("configuring TLS")?;
    }
    let grpc_server = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(DataPlaneServiceServer::new(grpc::DataPlaneApi::new(
            publisher.clone(),
            shared.clone(),
        )))
        .add_service(OperatorServiceServer::new(grpc::OperatorApi::new(
            publisher,
        )))
        .serve_with_incoming(TcpListenerStream::new(grpc));
    actix_rt::spawn(async move {
        if let Err(e) = grpc_server.await {
            tracing::error!(error = %e, "grpc server failed");
        }
    });
    actix_rt::spawn(registry::serve(registry, shared.clone()));
    ready.store(true, Ordering::Release);
    info!(
        registry = %args.registry_listen,
        grpc = %args.grpc_listen,
        admin = %args.admin_listen,
        "portico-cp ready"
    );

    shutdown_signal().await;
    info!(sessions = shared.directory.len(), "portico-cp stopping");
    // Tell every home connection, then give the connections a moment to write it.
    let notices = shared
        .directory
        .all()
        .into_iter()
        .map(|s| s.send(session::NotifyShutdown));
    futures::future::join_all(notices).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    System::current().stop();
    Ok(())
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))?;
    // Tests pass port 0 and read the real port from this line.
    info!(listener = what, addr = %listener.local_addr()?, "listening");
    Ok(listener)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
