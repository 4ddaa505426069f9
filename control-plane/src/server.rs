//! The control plane put together: restores the store, starts the
//! committer, the publisher (on its own thread), the session arbiters and
//! the listeners, and runs until SIGTERM or a store failure.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use portico_proto::v1::data_plane_service_server::DataPlaneServiceServer;
use portico_proto::v1::operator_service_server::OperatorServiceServer;
use portico_proto::v1::replica_service_server::ReplicaServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::config::committer::Committer;
use crate::config::global::{GlobalConfig, SharedConfig};
use crate::observe::{admin, telemetry};
use crate::planes::publisher::Publisher;
use crate::planes::{grpc, plane_commands};
use crate::registry::connection as registry;
pub use crate::session::Limits;
use crate::session::{Directory, SessionSettings, Shared};
use crate::{session, store};
use parking_lot::RwLock;

/// Everything `run` needs, as the flags of `portico-cp` give it.
#[derive(Debug, Clone)]
pub struct Config {
    /// This control plane's name among replicas (docs/HA.md).
    pub replica_id: String,
    /// The gRPC address other replicas dial (default: the bound one).
    pub advertise_grpc: Option<String>,
    pub registry_listen: String,
    pub grpc_listen: String,
    pub admin_listen: String,
    pub data_dir: PathBuf,
    pub tls: portico_proto::tls::TlsFiles,
    pub session_grace: Duration,
    pub apply_timeout: Duration,
    pub fleet_grace: Duration,
    pub staged_ttl: Duration,
    pub maintenance_probe_limit: Duration,
    pub restore_grace: Duration,
    pub session_threads: usize,
    pub registry_auth: Option<PathBuf>,
    pub backend_policy: portico_proto::backend_policy::BackendPolicy,
    pub limits: Limits,
    /// `--cert-dir`: certificate pairs to serve, watched.
    pub cert_dir: Option<PathBuf>,
    /// `--acme-*`: obtain certificates for routed hosts no file covers.
    pub acme: Option<crate::certs::acme::AcmeConfig>,
}

/// Runs the control plane on `store`. A store that cannot be written ends
/// it with a `store::StoreError`, for `main` to turn into an exit code.
pub async fn run(args: Config, store: Arc<dyn store::Store>) -> anyhow::Result<()> {
    let loaded = store.load()?;
    let sessions = loaded
        .sessions
        .iter()
        .map(|r| r.restore())
        .collect::<Result<Vec<_>, _>>()
        .context("restoring sessions")?;
    let mut global = GlobalConfig::new(loaded.version);
    for s in &sessions {
        global.restore(&s.identity.id, &s.identity.service, s.active_specs(&s.ops));
    }
    global.restore_tls(loaded.certificates, loaded.challenges);
    info!(
        version = loaded.version,
        sessions = sessions.len(),
        routes = global.all_routes().count(),
        certificates = global.tls().certificates.len(),
        data_planes = loaded.fleet.len(),
        "state restored"
    );

    let auth = match &args.registry_auth {
        Some(path) => Some(Arc::new(
            crate::registry::auth::RegistryAuth::load(path).context("--registry-auth")?,
        )),
        None => None,
    };
    let registry = bind(&args.registry_listen, "registry").await?;
    if auth.is_none() && !registry.local_addr()?.ip().is_loopback() {
        tracing::warn!(addr = %args.registry_listen, "the registry listens beyond loopback without --registry-auth: anyone who reaches it can register any service");
    }
    let grpc = bind(&args.grpc_listen, "grpc").await?;
    let admin = bind(&args.admin_listen, "admin").await?;
    let replica = store::ReplicaRecord {
        id: args.replica_id.clone(),
        registry: registry.local_addr()?.to_string(),
        grpc: match &args.advertise_grpc {
            Some(addr) => addr.clone(),
            None => grpc.local_addr()?.to_string(),
        },
        admin: admin.local_addr()?.to_string(),
        started_unix_ms: portico_proto::time::unix_ms(std::time::SystemTime::now()),
    };

    let (fatal, mut fatal_rx) = store::Fatal::channel();
    // On a thread of its own, so a commit's fsync never delays acknowledgements.
    let publisher_thread = Arbiter::new();
    let global: SharedConfig = Arc::new(RwLock::new(global));
    let (apply_timeout, fleet_grace, members) =
        (args.apply_timeout, args.fleet_grace, loaded.fleet);
    let (publisher_config, publisher_store) = (global.clone(), store.clone());
    let publisher = Publisher::start_in_arbiter(&publisher_thread.handle(), move |_| {
        Publisher::new(
            apply_timeout,
            fleet_grace,
            publisher_config,
            members,
            publisher_store,
        )
    });
    let telemetry = telemetry::Telemetry::new(global.clone());
    let metrics = Arc::new(crate::observe::metrics::Metrics::default());
    let committer = Committer::new(
        global.clone(),
        publisher.clone(),
        store.clone(),
        fatal.clone(),
        telemetry.clone(),
        metrics.clone(),
    )
    .start();
    let peers = crate::planes::peers::Peers::new(store.clone(), args.tls.clone());
    actix_rt::spawn(peers.clone().run());
    let threads = args.session_threads.max(1);
    let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
    let shared = Arc::new(Shared {
        directory: Directory::new(
            arbiters.iter().map(Arbiter::handle).collect(),
            loaded.route_reserved,
            store.clone(),
            fatal,
        ),
        committer,
        telemetry,
        planes: plane_commands::PlaneCommands::new(publisher.clone(), peers.clone()),
        settings: SessionSettings {
            grace: args.session_grace,
            staged_ttl: args.staged_ttl,
            maintenance_probe_limit: args.maintenance_probe_limit,
            backend_policy: args.backend_policy.clone(),
            limits: args.limits,
        },
        auth: auth.clone(),
        metrics,
    });
    if let Some(auth) = auth {
        actix_rt::spawn(auth.watch());
    }

    if store.replica_id().is_empty() {
        for state in sessions {
            Directory::restore(&shared, state, args.restore_grace);
        }
    } else {
        // Replicas: only sessions no live replica runs are this one's to
        // restore; the others keep theirs.
        for record in &loaded.sessions {
            shared.directory.stored(record);
        }
        let orphans = store.claim_orphans(true)?;
        Directory::adopt(&shared, orphans, args.restore_grace);
        if let Some(writes) = store.follow() {
            actix_rt::spawn(follow(
                writes,
                shared.clone(),
                publisher.clone(),
                store.clone(),
            ));
        }
    }
    let certs = crate::certs::Certs::new(shared.clone(), global.clone());
    if let Some(dir) = args.cert_dir.clone() {
        info!(dir = %dir.display(), "serving the certificate pairs of this directory");
        actix_rt::spawn(crate::certs::files::watch(certs.clone(), dir));
    }
    if let Some(acme) = args.acme.clone() {
        info!(directory = %acme.directory, renew_before = ?acme.renew_before, "obtaining certificates by ACME (HTTP-01)");
        actix_rt::spawn(crate::certs::acme::run(
            certs.clone(),
            acme,
            store.clone(),
            loaded.acme_account,
        ));
    }

    let ready = Arc::new(AtomicBool::new(false));
    let api = crate::observe::dashboard::Api {
        shared: shared.clone(),
        config: global.clone(),
        publisher: publisher.clone(),
        events: crate::observe::dashboard::Events::watch(&publisher),
    };
    let counted = admin::Counted {
        shared: shared.clone(),
        config: global.clone(),
        publisher: publisher.clone(),
        api,
    };
    actix_rt::spawn(admin::serve(admin, ready.clone(), counted));
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
            tls.enabled(),
        )))
        .add_service(ReplicaServiceServer::new(grpc::ReplicaApi::new(
            shared.clone(),
        )))
        .add_service(OperatorServiceServer::new(grpc::OperatorApi::new(
            publisher,
            global.clone(),
            certs.status.clone(),
            replica.clone(),
            store.clone(),
        )))
        .serve_with_incoming(TcpListenerStream::new(grpc));
    actix_rt::spawn(async move {
        if let Err(e) = grpc_server.await {
            tracing::error!(error = %e, "grpc server failed");
        }
    });
    actix_rt::spawn(registry::serve(registry, shared.clone()));
    store.announce(replica);
    ready.store(true, Ordering::Release);
    info!(
        registry = %args.registry_listen,
        grpc = %args.grpc_listen,
        admin = %args.admin_listen,
        "portico-cp ready"
    );

    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        Some(e) = fatal_rx.recv() => Some(e),
    };
    // Other replicas stop waiting for this one's data planes and take its
    // sessions over now, rather than when its lease runs out.
    store.close();
    if let Some(e) = failed {
        System::current().stop();
        return Err(e.into());
    }
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

/// Feeds what the replicas write to etcd (this one's too) to the parts that
/// follow it: versions to the committer, data planes' records to the
/// publisher; sessions that moved to another replica are let go here, and
/// a replica gone has its sessions taken over (by one replica each).
async fn follow(
    mut writes: tokio::sync::mpsc::UnboundedReceiver<store::Observed>,
    shared: Arc<Shared>,
    publisher: Addr<Publisher>,
    store: Arc<dyn store::Store>,
) {
    while let Some(mut write) = writes.recv().await {
        match &mut write {
            store::Observed::Write(batch) => {
                let (put, gone) = (
                    std::mem::take(&mut batch.fleet_put),
                    std::mem::take(&mut batch.fleet_delete),
                );
                if !put.is_empty() || !gone.is_empty() {
                    publisher.do_send(crate::planes::publisher::RemoteMembers { put, gone });
                }
                for record in &batch.put {
                    shared.directory.stored(record);
                }
                for id in &batch.delete {
                    shared.directory.stored_gone(id);
                }
                let here = store.replica_id();
                let moved = batch
                    .put
                    .iter()
                    .filter(|r| !r.replica.is_empty() && r.replica != here)
                    .map(|r| r.id.clone())
                    .chain(batch.delete.iter().cloned());
                for id in moved {
                    actix_rt::spawn(Directory::release_if_moved(shared.clone(), id));
                }
            }
            store::Observed::ReplicaGone(replica) => {
                info!(%replica, "replica gone; taking its sessions over");
                let (claiming, shared) = (store.clone(), shared.clone());
                actix_rt::spawn(async move {
                    match actix_rt::task::spawn_blocking(move || claiming.claim_orphans(false))
                        .await
                    {
                        Ok(Ok(orphans)) => {
                            let grace = shared.settings.grace;
                            Directory::adopt(&shared, orphans, grace);
                        }
                        _ => tracing::warn!("cannot take the sessions of a gone replica over"),
                    }
                });
            }
            store::Observed::Missed => {}
        }
        shared
            .committer
            .do_send(crate::config::committer::Followed(write));
    }
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
