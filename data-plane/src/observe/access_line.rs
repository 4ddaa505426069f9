//! One access-log line per request, serialized straight into the log's
//! batch as a JSON object.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::observe::access_log::AccessLog;
use crate::pipeline::client_ip::Client;
use crate::pipeline::ctx::{request_host, Ended, RequestCtx};

/// A value written into the access log as its `Display` text, without
/// building a `String` first.
struct Shown<T>(T);

impl<T: std::fmt::Display> serde::Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The client as logged: the connection's address and port, or the
/// address a trusted proxy named.
enum Peer<'a> {
    Socket(&'a pingora::protocols::l4::socket::SocketAddr),
    Named(std::net::IpAddr),
    /// As the route's `pii_ip` keeps it.
    Masked(String),
}

impl std::fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Socket(a) => a.fmt(f),
            Peer::Named(ip) => ip.fmt(f),
            Peer::Masked(text) => f.write_str(text),
        }
    }
}

#[derive(serde::Serialize)]
#[serde(bound(serialize = "Time: std::fmt::Display"))]
struct AccessLine<'a, Time: std::fmt::Display> {
    time: Shown<Time>,
    client: Option<Shown<Peer<'a>>>,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<std::borrow::Cow<'a, str>>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream: Option<SocketAddr>,
    upstream_duration_ms: Option<f64>,
    route_id: Option<&'a str>,
    service: Option<&'a str>,
    request_id: &'a str,
    /// With geo rules: the client's country (`unknown` when the database
    /// does not know it).
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<&'a str>,
}

/// Writes one access-log line.
pub fn log_access(
    log: &AccessLog,
    end: &Ended<'_>,
    ctx: &RequestCtx,
    took: Duration,
    pii: &crate::config::live::PiiDefaults,
) {
    let req = end.head;
    let own = ctx.route.as_ref().map(|r| &r.policy.pii);
    let merged;
    let pii = match own {
        Some(own) if !own.is_unset() => {
            merged = own.over(&pii.defaults);
            (&merged, &pii.key)
        }
        _ => (&pii.defaults, &pii.key),
    };
    let (pii, key) = pii;
    let masked_client = ctx.client.and_then(|c| pii.client(c.ip(), key));
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let host = request_host(req).unwrap_or_default();
    let line = AccessLine {
        time: Shown(portico_proto::time::rfc3339_millis_display(
            SystemTime::now() - took,
        )),
        client: match (ctx.client, masked_client) {
            (_, Some(text)) => Some(Shown(Peer::Masked(text))),
            (Some(Client::Forwarded(ip)), None) => Some(Shown(Peer::Named(ip))),
            _ => end.client.map(|a| Shown(Peer::Socket(a))),
        },
        host: &host,
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query().map(|q| pii.query(q)),
        status: end.status,
        bytes_in: end.read,
        bytes_out: end.sent,
        duration_ms: ms(took),
        upstream: ctx.upstream.map(|(a, _)| a),
        upstream_duration_ms: ctx.upstream_took.map(ms),
        route_id: ctx.route.as_ref().map(|r| r.spec.route_id.as_str()),
        service: ctx.route.as_ref().map(|r| r.spec.service.as_str()),
        request_id: ctx.request_id.to_str().unwrap_or_default(),
        country: ctx
            .route
            .as_ref()
            .filter(|r| r.policy.geo_allow.is_some() || r.policy.geo_deny.is_some())
            .map(|_| match &ctx.admission.country {
                Some(c) => std::str::from_utf8(c).unwrap_or(crate::filters::geo::UNKNOWN),
                None => crate::filters::geo::UNKNOWN,
            }),
    };
    log.write(&line);
}
