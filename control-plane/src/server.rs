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

use crate::certs::Certs;
use crate::config::committer::Committer;
use crate::config::global::{GlobalConfig, SharedConfig};
use crate::observe::admin;
use crate::observe::telemetry::Telemetry;
use crate::planes::grpc;
use crate::planes::peers::Peers;
use crate::planes::plane_commands::PlaneCommands;
use crate::planes::publisher::Publisher;
use crate::registry::auth::RegistryAuth;
use crate::registry::connection as registry;
pub use crate::session::Limits;
use crate::session::{Directory, RouteIds, SessionEnv, SessionSettings, SessionState, Sessions};
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
    /// `--sites`, `--global`: site files to serve, watched.
    pub sites: Option<PathBuf>,
    pub global: Option<PathBuf>,
    /// `--acme-*`: obtain certificates for routed hosts no file covers.
    pub acme: Option<crate::certs::acme::AcmeConfig>,
}

/// Runs the control plane on `store`. A store that cannot be written ends
/// it with a `store::StoreError`, for `main` to turn into an exit code.
pub async fn run(args: Config, store: Arc<dyn store::Store>) -> anyhow::Result<()> {
    let (loaded, restored, global) = restore(&store)?;
    let auth = load_auth(&args)?;
    let listeners = Listeners::bind(&args, auth.is_some()).await?;
    let replica = listeners.replica(&args)?;
    let (fatal, mut fatal_rx) = store::Fatal::channel();
    let core = Core::start(&args, &store, global, fatal, &loaded, auth);
    bring_sessions_back(
        &core,
        &store,
        restored,
        &loaded.sessions,
        args.restore_grace,
    )?;
    let certs = start_certs(&args, &core, &store, loaded.acme_account);
    let sites = start_sites(&args, &core, &certs);
    let ready = Arc::new(AtomicBool::new(false));
    let counted = core.counted(
        certs.status.clone(),
        store.clone(),
        replica.clone(),
        sites.clone(),
    );
    actix_rt::spawn(admin::serve(listeners.admin, ready.clone(), counted));
    serve_grpc(
        listeners.grpc,
        &args,
        &core,
        &certs,
        &replica,
        &store,
        &sites,
    )
    .await?;
    actix_rt::spawn(registry::serve(listeners.registry, core.sessions.clone()));
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
    core.stop().await;
    Ok(())
}

/// Stores written before sessions were kept by key hold their ids: each
/// such record is written again under its key, in one batch.
fn key_sessions(store: &dyn store::Store) -> anyhow::Result<()> {
    let loaded = store.load()?;
    let old: Vec<store::SessionRecord> = loaded
        .sessions
        .into_iter()
        .filter(|s| !crate::session::key::is_key(&s.id) && !crate::session::key::is_site(&s.id))
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    let batch = store::Batch {
        delete: old.iter().map(|s| s.id.clone()).collect(),
        put: old.into_iter().map(|s| s.keyed()).collect(),
        ..Default::default()
    };
    store
        .commit(&batch)
        .context("keeping the stored sessions by key")?;
    info!(
        sessions = batch.put.len(),
        "stored sessions are kept by key now, no longer by id"
    );
    Ok(())
}

/// The stored state, its sessions read back, and the global configuration
/// made of them.
fn restore(
    store: &Arc<dyn store::Store>,
) -> anyhow::Result<(store::Loaded, Vec<SessionState>, GlobalConfig)> {
    key_sessions(store.as_ref())?;
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
    // Sites are served as stored until their files are read again; they
    // have no actor.
    let sessions: Vec<SessionState> = sessions
        .into_iter()
        .filter(|s| !crate::session::key::is_site(&s.identity.id))
        .collect();
    global.restore_tls(loaded.certificates.clone(), loaded.challenges.clone());
    info!(
        version = loaded.version,
        sessions = sessions.len(),
        routes = global.all_routes().count(),
        certificates = global.tls().certificates.len(),
        data_planes = loaded.fleet.len(),
        "state restored"
    );
    Ok((loaded, sessions, global))
}

fn load_auth(args: &Config) -> anyhow::Result<Option<Arc<RegistryAuth>>> {
    let Some(path) = &args.registry_auth else {
        return Ok(None);
    };
    let auth = Arc::new(RegistryAuth::load(path).context("--registry-auth")?);
    actix_rt::spawn(auth.clone().watch());
    Ok(Some(auth))
}

struct Listeners {
    registry: TcpListener,
    grpc: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    async fn bind(args: &Config, auth: bool) -> anyhow::Result<Listeners> {
        let registry = bind(&args.registry_listen, "registry").await?;
        if !auth && !registry.local_addr()?.ip().is_loopback() {
            tracing::warn!(addr = %args.registry_listen, "the registry listens beyond loopback without --registry-auth: anyone who reaches it can register any service");
        }
        Ok(Listeners {
            registry,
            grpc: bind(&args.grpc_listen, "grpc").await?,
            admin: bind(&args.admin_listen, "admin").await?,
        })
    }

    /// How this replica announces itself to the others.
    fn replica(&self, args: &Config) -> anyhow::Result<store::ReplicaRecord> {
        Ok(store::ReplicaRecord {
            id: args.replica_id.clone(),
            registry: self.registry.local_addr()?.to_string(),
            grpc: match &args.advertise_grpc {
                Some(addr) => addr.clone(),
                None => self.grpc.local_addr()?.to_string(),
            },
            admin: self.admin.local_addr()?.to_string(),
            started_unix_ms: portico_proto::time::unix_ms(std::time::SystemTime::now()),
        })
    }
}

/// The actors and handles every listener serves from.
struct Core {
    global: SharedConfig,
    publisher: Addr<Publisher>,
    peers: Arc<Peers>,
    sessions: Arc<Sessions>,
    /// The publisher's thread and the session arbiters, kept for the life
    /// of the process.
    _threads: (Arbiter, Vec<Arbiter>),
}

impl Core {
    fn start(
        args: &Config,
        store: &Arc<dyn store::Store>,
        global: GlobalConfig,
        fatal: store::Fatal,
        loaded: &store::Loaded,
        auth: Option<Arc<RegistryAuth>>,
    ) -> Core {
        // On a thread of its own, so a commit's fsync never delays acknowledgements.
        let publisher_thread = Arbiter::new();
        let global: SharedConfig = Arc::new(RwLock::new(global));
        let (apply_timeout, fleet_grace) = (args.apply_timeout, args.fleet_grace);
        let (config, members, for_publisher) =
            (global.clone(), loaded.fleet.clone(), store.clone());
        let publisher = Publisher::start_in_arbiter(&publisher_thread.handle(), move |_| {
            Publisher::new(apply_timeout, fleet_grace, config, members, for_publisher)
        });
        let telemetry = Telemetry::new(global.clone());
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
        let peers = Peers::new(store.clone(), args.tls.clone());
        actix_rt::spawn(peers.clone().run());
        let arbiters: Vec<Arbiter> = (0..args.session_threads.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let directory = Arc::new(Directory::new(
            arbiters.iter().map(Arbiter::handle).collect(),
        ));
        let leaving = directory.clone();
        let env = Arc::new(SessionEnv {
            committer,
            telemetry,
            planes: PlaneCommands::new(publisher.clone(), peers.clone()),
            settings: SessionSettings {
                grace: args.session_grace,
                staged_ttl: args.staged_ttl,
                maintenance_probe_limit: args.maintenance_probe_limit,
                backend_policy: args.backend_policy.clone(),
                limits: args.limits,
            },
            auth,
            metrics,
            route_ids: std::sync::Arc::new(RouteIds::new(
                loaded.route_reserved,
                store.clone(),
                fatal,
            )),
            leave: Box::new(move |id, identity| leaving.remove(id, identity)),
        });
        Core {
            global,
            publisher,
            peers,
            sessions: Arc::new(Sessions::new(env, directory, store.clone())),
            _threads: (publisher_thread, arbiters),
        }
    }

    fn env(&self) -> &SessionEnv {
        &self.sessions.env
    }

    /// What `/debug/counts`, `/metrics` and the dashboard's API read.
    fn counted(
        &self,
        acme: crate::certs::AcmeStatus,
        store: Arc<dyn store::Store>,
        me: store::ReplicaRecord,
        sites: crate::sites::status::SitesBoard,
    ) -> admin::Counted {
        let api = crate::observe::dashboard::Api {
            acme,
            sites,
            store,
            me,
            directory: self.sessions.directory.clone(),
            replica: self.sessions.replica_id().to_string(),
            telemetry: self.env().telemetry.clone(),
            config: self.global.clone(),
            publisher: self.publisher.clone(),
            events: crate::observe::dashboard::Events::watch(&self.publisher),
        };
        admin::Counted {
            sessions: self.sessions.clone(),
            config: self.global.clone(),
            publisher: self.publisher.clone(),
            api,
        }
    }

    /// What the data planes' and the replicas' services reach.
    fn plane_side(&self, args: &Config) -> Arc<grpc::PlaneSide> {
        Arc::new(grpc::PlaneSide {
            directory: self.sessions.directory.clone(),
            config: self.global.clone(),
            telemetry: self.env().telemetry.clone(),
            planes: PlaneCommands::new(self.publisher.clone(), self.peers.clone()),
            backend_policy: args.backend_policy.clone(),
        })
    }

    /// Tells every home connection, then gives the connections a moment to
    /// write it.
    async fn stop(self) {
        let directory = &self.sessions.directory;
        info!(sessions = directory.len(), "portico-cp stopping");
        let notices = directory
            .all()
            .into_iter()
            .map(|s| s.send(session::NotifyShutdown));
        futures::future::join_all(notices).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        System::current().stop();
    }
}

/// Sessions of the stored state run again, detached with the restore
/// grace: all of them with a store of one's own; with replicas, those no
/// live replica runs, and the watch of the others' writes starts.
fn bring_sessions_back(
    core: &Core,
    store: &Arc<dyn store::Store>,
    restored: Vec<SessionState>,
    records: &[store::SessionRecord],
    grace: Duration,
) -> anyhow::Result<()> {
    let sessions = &core.sessions;
    if store.replica_id().is_empty() {
        for state in restored {
            sessions.restore(state, grace, false);
        }
        return Ok(());
    }
    for record in records {
        sessions.directory.stored(record);
    }
    let orphans = store.claim_orphans(true)?;
    sessions.adopt(orphans, grace, true);
    if let Some(writes) = store.follow() {
        actix_rt::spawn(follow(
            writes,
            sessions.clone(),
            core.publisher.clone(),
            store.clone(),
        ));
    }
    Ok(())
}

/// The certificate sources: the watched directory and the ACME client.
fn start_certs(
    args: &Config,
    core: &Core,
    store: &Arc<dyn store::Store>,
    acme_account: Option<Vec<u8>>,
) -> Certs {
    let certs = Certs::new(
        core.env().committer.clone(),
        core.sessions.directory.clone(),
        core.global.clone(),
    );
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
            acme_account,
        ));
    }
    certs
}

/// `--sites` and `--global`: read now and watched; how they stand.
fn start_sites(args: &Config, core: &Core, certs: &Certs) -> crate::sites::status::SitesBoard {
    let board = crate::sites::status::SitesBoard::default();
    let stored = !core.global.read().site_keys().is_empty();
    if args.sites.is_none() && args.global.is_none() && !stored {
        return board;
    }
    info!(sites = ?args.sites, global = ?args.global, "serving the site files");
    let watch = crate::sites::watch::SiteWatch {
        dir: args.sites.clone(),
        global: args.global.clone(),
        committer: core.env().committer.clone(),
        publisher: core.publisher.clone(),
        ids: core.env().route_ids.clone(),
        config: core.global.clone(),
        certs: certs.clone(),
        metrics: core.env().metrics.clone(),
        board: board.clone(),
    };
    actix_rt::spawn(watch.run());
    board
}

/// The gRPC services: data planes, replicas and operators, with health and
/// reflection, over TLS when configured.
async fn serve_grpc(
    listener: TcpListener,
    args: &Config,
    core: &Core,
    certs: &Certs,
    replica: &store::ReplicaRecord,
    store: &Arc<dyn store::Store>,
    sites: &crate::sites::status::SitesBoard,
) -> anyhow::Result<()> {
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
    let side = core.plane_side(args);
    let grpc_server = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(DataPlaneServiceServer::new(grpc::DataPlaneApi::new(
            core.publisher.clone(),
            side.clone(),
            tls.enabled(),
        )))
        .add_service(ReplicaServiceServer::new(grpc::ReplicaApi::new(
            side,
            core.sessions.clone(),
        )))
        .add_service(OperatorServiceServer::new(grpc::OperatorApi::new(
            core.publisher.clone(),
            core.global.clone(),
            certs.status.clone(),
            replica.clone(),
            store.clone(),
            sites.clone(),
        )))
        .serve_with_incoming(TcpListenerStream::new(listener));
    actix_rt::spawn(async move {
        if let Err(e) = grpc_server.await {
            tracing::error!(error = %e, "grpc server failed");
        }
    });
    Ok(())
}

/// Feeds what the replicas write to etcd (this one's too) to the parts that
/// follow it: versions to the committer, data planes' records to the
/// publisher; sessions that moved to another replica are let go here, and
/// a replica gone has its sessions taken over (by one replica each).
async fn follow(
    mut writes: tokio::sync::mpsc::UnboundedReceiver<store::Observed>,
    sessions: Arc<Sessions>,
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
                    sessions.directory.stored(record);
                }
                for id in &batch.delete {
                    sessions.directory.stored_gone(id);
                }
                let here = store.replica_id();
                let moved = batch
                    .put
                    .iter()
                    .filter(|r| !r.replica.is_empty() && r.replica != here)
                    .filter(|r| !crate::session::key::is_site(&r.id))
                    .map(|r| r.id.clone())
                    .chain(batch.delete.iter().cloned());
                for id in moved {
                    actix_rt::spawn(sessions.clone().release_if_moved(id));
                }
            }
            store::Observed::ReplicaGone(replica) => {
                info!(%replica, "replica gone; taking its sessions over");
                let (claiming, sessions) = (store.clone(), sessions.clone());
                actix_rt::spawn(async move {
                    match actix_rt::task::spawn_blocking(move || claiming.claim_orphans(false))
                        .await
                    {
                        Ok(Ok(orphans)) => {
                            sessions.adopt(orphans, sessions.env.settings.grace, true);
                        }
                        _ => tracing::warn!("cannot take the sessions of a gone replica over"),
                    }
                });
            }
            store::Observed::Missed => {}
        }
        sessions
            .env
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
