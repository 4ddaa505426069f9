//! portico-dp: the data plane. Proxies traffic with Pingora using the
//! configuration the control plane pushes; keeps serving when it is away.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use portico_data_plane::cli::Args;
use tracing::{info, warn};

use portico_data_plane::allocator;
use portico_data_plane::backends::{dns, dns_refresh, health};
use portico_data_plane::config::install::ConfigState;
use portico_data_plane::config::live::Live;
use portico_data_plane::config::{cache, sync};
use portico_data_plane::edge::certs;
use portico_data_plane::edge::connections::{ClientConnections, ConnLimits};
use portico_data_plane::edge::shutdown::{StopPolicy, Stopper};
use portico_data_plane::filters::request_checks;
use portico_data_plane::observe::{access_log, admin, telemetry};
use portico_data_plane::pipeline::forward::Forwarder;
use portico_data_plane::pipeline::gate::Gate;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    allocator::no_huge_pages();
    let node_id = args.node_id.clone().unwrap_or_else(default_node_id);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let (listen, admin_listen, listen_tls) = concrete_addrs(
        &args.listen,
        &args.admin_listen,
        args.listen_tls.as_deref(),
        args.upgrade,
    )?;
    if let Some(path) = &args.upstream_ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        portico_proto::probe::trust_ca(&pem).map_err(anyhow::Error::msg)?;
    }
    let listen_proxy_protocol = match &args.listen_proxy_protocol {
        Some(raw) => Some(
            concrete_addr(raw, args.upgrade)
                .context("PROXY protocol listen address")?
                .0,
        ),
        None => None,
    };
    let live = live(&args)?;
    let mut state = ConfigState::new(live.clone(), args.max_routes)
        .with_default_cert(args.default_cert.clone());
    if let Some(path) = &args.snapshot_cache {
        serve_cached(&mut state, path);
    }
    start_background(&args, &live, state, node_id.clone())?;

    let mut server = pingora_server(&args, threads);
    let stopper = Stopper::new(
        live.clone(),
        StopPolicy {
            delay: args.shutdown_delay,
            grace: args.shutdown_grace,
            upgrade_sock: args.upgrade_sock.clone(),
        },
    );
    let open_files = raise_open_files_limit();
    let counts = live.connections.clone();
    allocator::start_collector(move || counts.swing(), args.upstream_idle_timeout)
        .context("starting the memory collector")?;
    let limits = ConnLimits {
        keepalive: args.keepalive_timeout,
        header: args.header_timeout,
        max: args
            .max_client_connections
            .unwrap_or((open_files / 2) as usize)
            .max(1),
        proxy_protocol: listen_proxy_protocol,
    };
    let proxy = proxy_service(&args, &server, &live, limits, listen, listen_tls)?;
    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(admin::AdminApp { live }),
    );
    admin.add_tcp(&admin_listen.to_string());
    admin.threads = Some(1);
    server.add_service(stopper.proxy(proxy));
    server.add_service(stopper.admin(admin));
    // Tests start with port 0 and read the real ports from these lines.
    info!(listener = "proxy", addr = %listen, threads, max_connections = limits.max, open_files, keepalive = ?limits.keepalive, header_timeout = ?limits.header, "listening");
    if let Some(addr) = listen_tls {
        info!(listener = "tls", %addr, "listening");
    }
    if let Some(addr) = listen_proxy_protocol {
        info!(listener = "proxy_protocol", %addr, "listening");
    }
    info!(listener = "admin", addr = %admin_listen, "listening");
    info!(%node_id, control_plane = %args.control_plane.join(","), "portico-dp starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(stopper),
    });
    std::process::exit(0)
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

/// What the proxy and the admin listener share, with the access log and the
/// resolver the flags ask for.
fn live(args: &Args) -> anyhow::Result<Arc<Live>> {
    let access_log = match &args.access_log {
        Some(target) => Some(
            access_log::AccessLog::start(access_log::Target::parse(target), args.access_log_buffer)
                .context("starting the access log")?,
        ),
        None => None,
    };
    let pii_key = match &args.pii_key_file {
        Some(path) => {
            let key = std::fs::read(path)
                .with_context(|| format!("reading --pii-key-file {}", path.display()))?;
            anyhow::ensure!(key.len() >= 16, "--pii-key-file: at least 16 bytes of key");
            key
        }
        // Hashes then hold for this process only: unlinkable across restarts.
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    let geoip = match &args.geoip_db {
        Some(path) => Some(Arc::new(
            portico_data_plane::config::geoip::GeoDb::open(path)
                .with_context(|| format!("reading --geoip-db {}", path.display()))?,
        )),
        None => None,
    };
    Ok(Arc::new(Live {
        registry: portico_data_plane::backends::runtime::Registry::with_geoip(geoip),
        access_log,
        pii: portico_data_plane::config::live::PiiDefaults {
            defaults: args.access_log_pii.clone(),
            key: pii_key,
        },
        dns: dns::Dns::new(dns::Settings {
            server: args.resolver,
            refresh: args.dns_refresh,
            stale_grace: args.dns_stale_grace,
        }),
        ..Live::default()
    }))
}

/// Serves the cached configuration until the control plane answers; a
/// missing or bad cache is only logged.
fn serve_cached(state: &mut ConfigState, path: &std::path::Path) {
    match cache::load(path) {
        Ok(Some(push)) => {
            let version = push.version;
            match state.apply_cached(push) {
                Ok(()) => {
                    info!(version, path = %path.display(), "serving the cached configuration until the control plane answers")
                }
                Err(e) => {
                    warn!(error = %e, path = %path.display(), "ignoring an invalid snapshot cache")
                }
            }
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "ignoring the snapshot cache"),
    }
}

/// The threads beside the proxy: probes, name lookups and the access log's
/// reopening on one, the link to the control plane and telemetry on another.
fn start_background(
    args: &Args,
    live: &Arc<Live>,
    state: ConfigState,
    node_id: String,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.control_plane.iter().all(|u| !u.trim().is_empty()),
        "--control-plane needs at least one url"
    );
    // Every url is checked (TLS needs https://); the settings are the same.
    let mut tls = None;
    for url in &args.control_plane {
        tls = args.tls.client(url)?;
    }
    let (control_plane, cache_path) = (args.control_plane.clone(), args.snapshot_cache.clone());
    let (health_live, telemetry_live) = (live.clone(), live.clone());
    let (dns_live, hup_live) = (live.clone(), live.clone());
    on_own_thread("portico-health", async move {
        tokio::spawn(dns_refresh::run(dns_live));
        if let Some(db) = hup_live.registry.geoip.clone() {
            tokio::spawn(db.watch());
        }
        tokio::spawn(reopen_on_hup(hup_live));
        health::run(health_live).await
    })?;
    on_own_thread("portico-sync", async move {
        tokio::spawn(telemetry::run(telemetry_live));
        sync::run(control_plane, node_id, state, cache_path, tls).await
    })?;
    Ok(())
}

/// Pingora's server; with `--upgrade` it takes the running process's
/// listening sockets over here (and exits if none come within 5 s).
fn pingora_server(args: &Args, threads: usize) -> Server {
    // The stop is run by `Stopper` (it waits for the requests, not a fixed
    // time); Pingora then only winds down what is left.
    let conf = ServerConf {
        threads,
        // One event loop per worker thread, as nginx and HAProxy run: with one
        // thread, tokio's work-stealing scheduler cost 9 % of throughput and
        // a third more p99 (docs/BENCHMARKS.md, "Where the time goes").
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ca_file: args.upstream_ca.as_ref().map(|p| p.display().to_string()),
        upgrade_sock: args.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: args.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if args.upgrade {
        info!(upgrade_sock = %args.upgrade_sock, "waiting for the running portico-dp's listening sockets");
    }
    server.bootstrap();
    server
}

/// The proxy service on the plain listener (and the TLS one), with the
/// client-connection limits around Pingora's proxy.
fn proxy_service(
    args: &Args,
    server: &Server,
    live: &Arc<Live>,
    limits: ConnLimits,
    listen: SocketAddr,
    listen_tls: Option<SocketAddr>,
) -> anyhow::Result<Service<ClientConnections<Forwarder>>> {
    let gate = Gate::new(
        live.clone(),
        request_checks::HeadLimits {
            count: args.max_request_headers,
            bytes: args.max_request_header_bytes,
        },
        args.upstream_idle_timeout,
        listen_tls.map(|a| a.port()),
        args.trusted_proxies.clone(),
    );
    let connections = ClientConnections::new(
        Forwarder::new(Arc::new(gate), &server.configuration, args.fast_path),
        limits,
        live.connections.clone(),
        live.lifecycle.clone(),
    );
    let mut proxy = Service::new("proxy".to_string(), connections);
    // No read buffer per connection: requests are read straight into the
    // parser's buffer, so an idle connection holds no 64 KiB buffer. A
    // 1 KiB write buffer (Pingora's default is 1,460 bytes) still sends a
    // small response in one write, and an idle connection holds 0.5 KiB less.
    proxy.add_listener(
        ListenerConfig::tcp(listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(0).write(1024)),
    );
    if let Some(addr) = limits.proxy_protocol {
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .l4_buffer(L4BufferSettings::default().read(0).write(1024)),
        );
    }
    if let Some(addr) = listen_tls {
        let settings = certs::tls_settings(live.certs.clone()).context("TLS listener settings")?;
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).tls(settings));
    }
    Ok(proxy)
}

/// Raises the open-file limit to its hard limit (each client and backend
/// connection is a file); returns the limit now in force.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
            return 1024;
        }
        // An unlimited hard limit still stops at the kernel's nr_open.
        let target = limit.rlim_max.min(1 << 20);
        if limit.rlim_cur < target {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            } else {
                warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
            }
        }
    }
    limit.rlim_cur
}

/// Runs `work` on a thread of its own with a single-threaded runtime, away
/// from the proxy's workers.
fn on_own_thread(
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a current-thread runtime")
                .block_on(work)
        })
        .with_context(|| format!("starting the {name} thread"))?;
    Ok(())
}

/// SIGHUP reopens the access log (after logrotate moved it).
async fn reopen_on_hup(live: Arc<Live>) {
    let Some(log) = live.access_log.clone() else {
        return;
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; the access log will not be reopened");
            return;
        }
    };
    while hup.recv().await.is_some() {
        info!("SIGHUP: reopening the access log");
        log.reopen();
    }
}

/// `IP` (port 53) or `IP:PORT`.
/// Resolves the proxy, admin and TLS addresses; port 0 becomes a free port chosen
/// now, because Pingora binds later and does not report the port it got.
/// All ports are held until all are chosen: released one by one, the
/// second could get the port the first just gave back, and Pingora would
/// then bind both listeners to it (seen once in CI: proxy requests answered
/// by the admin listener).
fn concrete_addrs(
    proxy: &str,
    admin: &str,
    tls: Option<&str>,
    upgrade: bool,
) -> anyhow::Result<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    let (proxy, _held) = concrete_addr(proxy, upgrade).context("proxy listen address")?;
    let (admin, _also_held) = concrete_addr(admin, upgrade).context("admin listen address")?;
    let tls = tls
        .map(|raw| concrete_addr(raw, upgrade).context("TLS listen address"))
        .transpose()?;
    Ok((proxy, admin, tls.as_ref().map(|(addr, _)| *addr)))
}

/// One address, and for port 0 the listener holding the port chosen. An
/// upgrade takes sockets over by address, so it needs the real ones.
fn concrete_addr(raw: &str, upgrade: bool) -> anyhow::Result<(SocketAddr, Option<TcpListener>)> {
    let addr: SocketAddr = raw
        .parse()
        .with_context(|| format!("invalid address {raw}"))?;
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    if upgrade {
        anyhow::bail!("--upgrade needs the running process's addresses, not port 0 ({raw})");
    }
    let probe = TcpListener::bind(addr).with_context(|| format!("binding {raw}"))?;
    Ok((probe.local_addr()?, Some(probe)))
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "portico-dp".to_string());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_the_proxy_and_the_admin_listener_different_ports() {
        for _ in 0..500 {
            let (proxy, admin, _) =
                concrete_addrs("127.0.0.1:0", "127.0.0.1:0", None, false).unwrap();
            assert_ne!(proxy.port(), admin.port());
        }
    }
}
