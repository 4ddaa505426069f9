//! `portico-dp`'s flags, grouped by topic (`--help` and
//! `docs/reference/flags.md` show the same groups).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use portico_proto::duration::{parse_duration, parse_duration_or_zero};

#[derive(Debug, Parser)]
#[command(name = "portico-dp", version, about = "Portico data plane")]
pub struct Args {
    /// gRPC address of the control plane; several (comma-separated) for
    /// replicas, followed in turn when one goes away.
    #[arg(
        long,
        env = "PORTICO_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8182",
        value_delimiter = ',',
        help_heading = "Control plane"
    )]
    pub control_plane: Vec<String>,
    /// Address the proxy listens on (port 0 picks a free one and logs it).
    #[arg(
        long,
        env = "PORTICO_LISTEN",
        default_value = "127.0.0.1:8080",
        help_heading = "Listeners"
    )]
    pub listen: String,
    /// Address of the HTTPS listener (e.g. 0.0.0.0:443); none by default.
    /// Certificates come from the control plane (--cert-dir, ACME).
    #[arg(long, env = "PORTICO_LISTEN_TLS", help_heading = "Listeners")]
    pub listen_tls: Option<String>,
    /// TLS handshakes for a name no certificate covers (or without a name)
    /// get the certificate of this host; without it they fail with
    /// `unrecognized_name`.
    #[arg(long, env = "PORTICO_DEFAULT_CERT", help_heading = "Certificates")]
    pub default_cert: Option<String>,
    /// Address of the admin HTTP listener (/healthz, /ready).
    #[arg(
        long,
        env = "PORTICO_ADMIN_LISTEN",
        default_value = "127.0.0.1:8184",
        help_heading = "Listeners"
    )]
    pub admin_listen: String,
    #[command(flatten)]
    pub tls: portico_proto::tls::TlsFiles,
    /// Name of this data plane in the control plane's records; default host name and pid.
    #[arg(long, env = "PORTICO_NODE_ID", help_heading = "Control plane")]
    pub node_id: Option<String>,
    /// PEM file of certificate authorities trusted for https/wss backends,
    /// besides the system roots (also used by health probes).
    #[arg(long, env = "PORTICO_UPSTREAM_CA", help_heading = "Certificates")]
    pub upstream_ca: Option<std::path::PathBuf>,
    /// File where every acknowledged configuration is kept; at start the data
    /// plane serves from it until the control plane answers.
    #[arg(long, env = "PORTICO_SNAPSHOT_CACHE", help_heading = "Control plane")]
    pub snapshot_cache: Option<std::path::PathBuf>,
    /// Refuse (NACK) configurations with more routes than this; 0: no limit.
    #[arg(
        long,
        env = "PORTICO_MAX_ROUTES",
        default_value_t = 0,
        help_heading = "Control plane"
    )]
    pub max_routes: usize,
    /// Proxy worker threads; default one per core.
    #[arg(long, env = "PORTICO_THREADS", help_heading = "Limits")]
    pub threads: Option<usize>,
    /// After SIGTERM, keep accepting new connections this long (while load
    /// balancers see `/ready` answer 503), then close the proxy listener.
    #[arg(long, env = "PORTICO_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration_or_zero, help_heading = "Stopping")]
    pub shutdown_delay: Duration,
    /// Requests in flight when stopping may finish within this; then they are cut.
    #[arg(long, env = "PORTICO_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration_or_zero, help_heading = "Stopping")]
    pub shutdown_grace: Duration,
    /// Take the listening sockets over from the running portico-dp (send it
    /// SIGQUIT within 5 s) instead of binding them; the addresses must match.
    #[arg(long, help_heading = "Stopping")]
    pub upgrade: bool,
    /// An idle keep-alive client connection is closed after this.
    #[arg(long, env = "PORTICO_KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = parse_duration, help_heading = "Limits")]
    pub keepalive_timeout: Duration,
    /// A client must send a whole request head within this (from connecting,
    /// or from the first byte of a later request), else it is closed.
    #[arg(long, env = "PORTICO_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration, help_heading = "Limits")]
    pub header_timeout: Duration,
    /// A pooled backend connection unused for this long is closed, so the
    /// backend connections a burst opened (each with Pingora's 64 KiB read
    /// buffer) do not outlive it.
    #[arg(long, env = "PORTICO_UPSTREAM_IDLE_TIMEOUT", default_value = "20s", value_parser = parse_duration, help_heading = "Backends")]
    pub upstream_idle_timeout: Duration,
    /// `on`: requests to HTTP/1.1 backends without upgrade, compression or a
    /// large or chunked body take Portico's own forwarding loop on
    /// pingora-core; the rest go through pingora-proxy. `off`: all of them do.
    #[arg(long, env = "PORTICO_FAST_PATH", default_value = "on", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Backends")]
    pub fast_path: bool,
    /// Client connections beyond this are closed at accept; default half
    /// the open-file limit (raised to its hard limit at start, and logged),
    /// leaving the rest for backend connections.
    #[arg(long, env = "PORTICO_MAX_CLIENT_CONNECTIONS", help_heading = "Limits")]
    pub max_client_connections: Option<usize>,
    /// DNS server for backend names (`IP` or `IP:PORT`); default the
    /// system's configuration (/etc/resolv.conf and /etc/hosts).
    #[arg(long, env = "PORTICO_RESOLVER", value_parser = parse_resolver, help_heading = "DNS")]
    pub resolver: Option<SocketAddr>,
    /// Backend names are looked up again this often (sooner if their TTL is
    /// shorter, at most once a second).
    #[arg(long, env = "PORTICO_DNS_REFRESH", default_value = "5s", value_parser = parse_duration, help_heading = "DNS")]
    pub dns_refresh: Duration,
    /// A name that stops resolving keeps its last addresses this long.
    #[arg(long, env = "PORTICO_DNS_STALE_GRACE", default_value = "5m", value_parser = parse_duration_or_zero, help_heading = "DNS")]
    pub dns_stale_grace: Duration,
    /// Requests with more header fields than this get 431.
    #[arg(
        long,
        env = "PORTICO_MAX_REQUEST_HEADERS",
        default_value_t = 100,
        help_heading = "Limits"
    )]
    pub max_request_headers: usize,
    /// Requests whose target and header fields pass this many bytes get 431.
    #[arg(long, env = "PORTICO_MAX_REQUEST_HEADER_BYTES", default_value_t = 64 * 1024, help_heading = "Limits")]
    pub max_request_header_bytes: usize,
    /// Also serve plain HTTP here, on connections that begin with a PROXY
    /// protocol header (v1 or v2, as HAProxy and cloud load balancers send
    /// it): the client it names is the connection's peer. A connection
    /// without a valid header is closed.
    #[arg(
        long,
        env = "PORTICO_LISTEN_PROXY_PROTOCOL",
        help_heading = "Listeners"
    )]
    pub listen_proxy_protocol: Option<String>,
    /// Proxies in front of this data plane (CIDRs, comma-separated): only for
    /// a connection from one of these is the client taken from
    /// X-Forwarded-For (the right-most address not itself trusted) or
    /// Forwarded. That address is the one rate limits, IP lists and the
    /// access log use.
    #[arg(long, env = "PORTICO_TRUSTED_PROXIES", default_value = "", value_parser = parse_nets, help_heading = "Clients")]
    pub trusted_proxies: portico_proto::ip_set::IpSet,
    /// A MaxMind DB file (GeoLite2 / GeoIP2 Country or City, or compatible)
    /// for the routes that filter by country (`geo_allow`, `geo_deny`); read
    /// again when it changes.
    #[arg(long, env = "PORTICO_GEOIP_DB", help_heading = "Clients")]
    pub geoip_db: Option<std::path::PathBuf>,
    /// What the access log keeps about clients on routes that do not say:
    /// `pii_*` options as `key=value` pairs separated by `;`, for example
    /// "pii_ip=last_octet;pii_mask_query=token,password" (docs/OBSERVABILITY.md).
    #[arg(long, env = "PORTICO_ACCESS_LOG_PII", default_value = "", value_parser = crate::observe::pii::Pii::parse_defaults, help_heading = "Logs")]
    pub access_log_pii: crate::observe::pii::Pii,
    /// The key of `pii_ip=hash` (HMAC-SHA-256, at least 16 bytes), so one
    /// address hashes alike across restarts and data planes; without it, a
    /// random key per process.
    #[arg(long, env = "PORTICO_PII_KEY_FILE", help_heading = "Logs")]
    pub pii_key_file: Option<std::path::PathBuf>,
    /// Write one JSON line per request to this file (`-`: standard output);
    /// SIGHUP reopens it.
    #[arg(long, env = "PORTICO_ACCESS_LOG", help_heading = "Logs")]
    pub access_log: Option<String>,
    /// Access-log lines queued for the writer; beyond it lines are dropped
    /// (and counted), never waited for.
    #[arg(
        long,
        env = "PORTICO_ACCESS_LOG_BUFFER",
        default_value_t = 65_536,
        help_heading = "Logs"
    )]
    pub access_log_buffer: usize,
    /// Unix socket on which the listening sockets are handed to a new process.
    #[arg(
        long,
        env = "PORTICO_UPGRADE_SOCK",
        default_value = "/tmp/portico-dp-upgrade.sock",
        help_heading = "Stopping"
    )]
    pub upgrade_sock: String,
}

fn parse_resolver(raw: &str) -> Result<SocketAddr, String> {
    raw.parse::<SocketAddr>()
        .or_else(|_| {
            raw.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("invalid resolver address \"{raw}\": expected IP or IP:PORT"))
}

fn parse_nets(raw: &str) -> Result<portico_proto::ip_set::IpSet, String> {
    portico_proto::ip_set::IpSet::parse(raw)
}
