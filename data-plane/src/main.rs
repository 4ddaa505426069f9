//! portico-dp: the data plane. Proxies traffic with Pingora using the
//! configuration the control plane pushes; keeps serving when it is away.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use portico_proto::duration::{parse_duration, parse_duration_or_zero};
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
use portico_data_plane::pipeline::proxy;

#[derive(Debug, Parser)]
#[command(name = "portico-dp", version, about = "Portico data plane")]
struct Args {
    /// gRPC address of the control plane; several (comma-separated) for
    /// replicas, followed in turn when one goes away.
    #[arg(
        long,
        env = "PORTICO_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8182",
        value_delimiter = ','
    )]
    control_plane: Vec<String>,
    /// Address the proxy listens on (port 0 picks a free one and logs it).
    #[arg(long, env = "PORTICO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Address of the HTTPS listener (e.g. 0.0.0.0:443); none by default.
    /// Certificates come from the control plane (--cert-dir, ACME).
    #[arg(long, env = "PORTICO_LISTEN_TLS")]
    listen_tls: Option<String>,
    /// TLS handshakes for a name no certificate covers (or without a name)
    /// get the certificate of this host; without it they fail with
    /// `unrecognized_name`.
    #[arg(long, env = "PORTICO_DEFAULT_CERT")]
    default_cert: Option<String>,
    /// Address of the admin HTTP listener (/healthz, /ready).
    #[arg(long, env = "PORTICO_ADMIN_LISTEN", default_value = "127.0.0.1:8184")]
    admin_listen: String,
    #[command(flatten)]
    tls: portico_proto::tls::TlsFiles,
    /// Name of this data plane in the control plane's records; default host name and pid.
    #[arg(long, env = "PORTICO_NODE_ID")]
    node_id: Option<String>,
    /// PEM file of certificate authorities trusted for https/wss backends,
    /// besides the system roots (also used by health probes).
    #[arg(long, env = "PORTICO_UPSTREAM_CA")]
    upstream_ca: Option<std::path::PathBuf>,
    /// File where every acknowledged configuration is kept; at start the data
    /// plane serves from it until the control plane answers.
    #[arg(long, env = "PORTICO_SNAPSHOT_CACHE")]
    snapshot_cache: Option<std::path::PathBuf>,
    /// Refuse (NACK) configurations with more routes than this; 0: no limit.
    #[arg(long, env = "PORTICO_MAX_ROUTES", default_value_t = 0)]
    max_routes: usize,
    /// Proxy worker threads; default one per core.
    #[arg(long, env = "PORTICO_THREADS")]
    threads: Option<usize>,
    /// After SIGTERM, keep accepting new connections this long (while load
    /// balancers see `/ready` answer 503), then close the proxy listener.
    #[arg(long, env = "PORTICO_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration_or_zero)]
    shutdown_delay: Duration,
    /// Requests in flight when stopping may finish within this; then they are cut.
    #[arg(long, env = "PORTICO_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration_or_zero)]
    shutdown_grace: Duration,
    /// Take the listening sockets over from the running portico-dp (send it
    /// SIGQUIT within 5 s) instead of binding them; the addresses must match.
    #[arg(long)]
    upgrade: bool,
    /// An idle keep-alive client connection is closed after this.
    #[arg(long, env = "PORTICO_KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    keepalive_timeout: Duration,
    /// A client must send a whole request head within this (from connecting,
    /// or from the first byte of a later request), else it is closed.
    #[arg(long, env = "PORTICO_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// A pooled backend connection unused for this long is closed, so the
    /// backend connections a burst opened (each with Pingora's 64 KiB read
    /// buffer) do not outlive it.
    #[arg(long, env = "PORTICO_UPSTREAM_IDLE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    upstream_idle_timeout: Duration,
    /// Client connections beyond this are closed at accept; default half
    /// the open-file limit, leaving the rest for backend connections.
    #[arg(long, env = "PORTICO_MAX_CLIENT_CONNECTIONS")]
    max_client_connections: Option<usize>,
    /// DNS server for backend names (`IP` or `IP:PORT`); default the
    /// system's configuration (/etc/resolv.conf and /etc/hosts).
    #[arg(long, env = "PORTICO_RESOLVER", value_parser = parse_resolver)]
    resolver: Option<SocketAddr>,
    /// Backend names are looked up again this often (sooner if their TTL is
    /// shorter, at most once a second).
    #[arg(long, env = "PORTICO_DNS_REFRESH", default_value = "5s", value_parser = parse_duration)]
    dns_refresh: Duration,
    /// A name that stops resolving keeps its last addresses this long.
    #[arg(long, env = "PORTICO_DNS_STALE_GRACE", default_value = "5m", value_parser = parse_duration_or_zero)]
    dns_stale_grace: Duration,
    /// Requests with more header fields than this get 431.
    #[arg(long, env = "PORTICO_MAX_REQUEST_HEADERS", default_value_t = 100)]
    max_request_headers: usize,
    /// Requests whose target and header fields pass this many bytes get 431.
    #[arg(long, env = "PORTICO_MAX_REQUEST_HEADER_BYTES", default_value_t = 64 * 1024)]
    max_request_header_bytes: usize,
    /// Write one JSON line per request to this file (`-`: standard output);
    /// SIGHUP reopens it.
    #[arg(long, env = "PORTICO_ACCESS_LOG")]
    access_log: Option<String>,
    /// Access-log lines queued for the writer; beyond it lines are dropped
    /// (and counted), never waited for.
    #[arg(long, env = "PORTICO_ACCESS_LOG_BUFFER", default_value_t = 65_536)]
    access_log_buffer: usize,
    /// Unix socket on which the listening sockets are handed to a new process.
    #[arg(
        long,
        env = "PORTICO_UPGRADE_SOCK",
        default_value = "/tmp/portico-dp-upgrade.sock"
    )]
    upgrade_sock: String,
}

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
    Ok(Arc::new(Live {
        access_log,
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
) -> anyhow::Result<Service<ClientConnections<HttpProxy<proxy::Proxy>>>> {
    let connections = ClientConnections::new(
        pingora::proxy::http_proxy(
            &server.configuration,
            proxy::Proxy::new(
                live.clone(),
                request_checks::HeadLimits {
                    count: args.max_request_headers,
                    bytes: args.max_request_header_bytes,
                },
                args.upstream_idle_timeout,
                listen_tls.map(|a| a.port()),
            ),
        ),
        limits,
        live.connections.clone(),
        live.lifecycle.clone(),
    );
    let mut proxy = Service::new("proxy".to_string(), connections);
    // No read buffer per connection: requests are read straight into the
    // parser's buffer, so an idle connection holds no 64 KiB buffer.
    proxy.add_listener(
        ListenerConfig::tcp(listen.to_string()).l4_buffer(L4BufferSettings::default().read(0)),
    );
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
fn parse_resolver(raw: &str) -> Result<SocketAddr, String> {
    raw.parse::<SocketAddr>()
        .or_else(|_| {
            raw.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("invalid resolver address \"{raw}\": expected IP or IP:PORT"))
}

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
