//! The backend side of a request: the peer dialled (the chosen address, or
//! the next one on a retry), the headers it is sent, the retry after a
//! failed connect, and the status a failure becomes.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorSource;

use crate::config::table::Choice;
use crate::filters::select::idempotent;
use crate::observe::route_metrics::UpstreamError;
use crate::pipeline::chain::Target;
use crate::pipeline::ctx::{RequestCtx, X_REQUEST_ID};

/// The peer for the request: on a retry, another backend of the pool or the
/// next address of the same one.
pub fn peer(ctx: &mut RequestCtx, upstream_idle: Duration) -> Result<Box<HttpPeer>> {
    if !ctx.tried.is_empty() {
        let now = SystemTime::now();
        if let Some(Choice::Route(route)) = ctx.pool.as_ref().map(|p| p.choose(now, &ctx.tried)) {
            if !ctx.route.as_ref().is_some_and(|r| Arc::ptr_eq(r, &route)) {
                ctx.admission.endpoint = None;
            }
            ctx.route = Some(route);
        }
        if let Some(route) = &ctx.route {
            if let Some(next) = route.backend.pick(route.policy.breaker.as_ref(), now) {
                ctx.admission.endpoint = Some(next);
            }
        }
    }
    let route = ctx
        .route
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "no backend chosen"))?;
    let (url, addr) = match (&ctx.admission.target, &route.maintenance) {
        (Some(Target::Maintenance), Some(Some(m))) => {
            (&m.url, m.name.current().addrs.first().copied())
        }
        _ => (
            &route.spec.backend,
            ctx.admission.endpoint.as_ref().map(|e| e.addr),
        ),
    };
    let addr = addr.ok_or_else(|| {
        Error::explain(
            ErrorType::HTTPStatus(502),
            format!("backend host {} could not be resolved", url.host),
        )
    })?;
    // SNI only means something over TLS; leaving it empty otherwise saves
    // an allocation per request.
    let sni = if url.scheme.is_tls() {
        url.host.clone()
    } else {
        String::new()
    };
    ctx.upstream = Some((addr, Instant::now()));
    let mut peer = HttpPeer::new(addr, url.scheme.is_tls(), sni);
    peer.options.connection_timeout = route.policy.connect_timeout;
    peer.options.total_connection_timeout = route.policy.connect_timeout;
    peer.options.read_timeout = route.policy.timeout;
    peer.options.idle_timeout = Some(upstream_idle);
    if route.policy.http2 {
        // Over TLS, ALPN negotiates h2 (falling back to HTTP/1.1); over
        // plain TCP there is no negotiation, so h2 is spoken outright (h2c).
        if url.scheme.is_tls() {
            peer.options.set_http_version(2, 1);
        } else {
            peer.options.set_http_version(2, 2);
        }
    }
    Ok(Box::new(peer))
}

pub use crate::pipeline::client_ip::X_FORWARDED_FOR;
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The target the route's backend is asked for when its rewrites change
/// the client's (`strip_prefix`, `add_prefix`).
pub fn backend_target(ctx: &RequestCtx, uri: &http::Uri) -> Option<http::Uri> {
    let route = ctx.route.as_ref()?;
    let policy = &route.policy;
    let target = crate::pipeline::rewrite::target(
        uri.path_and_query().map_or("/", |p| p.as_str()),
        portico_proto::model::match_prefix(&route.spec.path),
        policy.strip_prefix,
        policy.add_prefix.as_deref(),
    )?;
    target.parse().ok()
}

/// The `Host` the backend gets when the route does not preserve the
/// client's (`preserve_host false`): the backend URL's host and port.
pub fn backend_host(ctx: &RequestCtx) -> Option<HeaderValue> {
    let route = ctx.route.as_ref().filter(|r| !r.policy.preserve_host)?;
    let backend = &route.spec.backend;
    let host = if backend.host.contains(':') {
        format!("[{}]:{}", backend.host, backend.port)
    } else {
        format!("{}:{}", backend.host, backend.port)
    };
    HeaderValue::try_from(host).ok()
}

/// `X-Request-Id`, `X-Forwarded-For` (appended to) and `X-Forwarded-Proto`,
/// through Pingora's header API (which keeps the header case map in step).
pub fn forwarded_headers(
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    client: Option<std::net::IpAddr>,
) -> Result<()> {
    upstream.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
    if let Some(ip) = client {
        let value = forwarded_for(upstream.headers.get(X_FORWARDED_FOR), ip);
        upstream.insert_header(X_FORWARDED_FOR, value)?;
    }
    upstream.insert_header(X_FORWARDED_PROTO, forwarded_proto(ctx.tls))?;
    if let Some(uri) = backend_target(ctx, &upstream.uri) {
        upstream.set_uri(uri);
    }
    if let Some(host) = backend_host(ctx) {
        upstream.insert_header(http::header::HOST, host)?;
    }
    Ok(())
}

/// `X-Forwarded-For`: the client's address appended to what came before.
pub fn forwarded_for(prior: Option<&HeaderValue>, ip: std::net::IpAddr) -> HeaderValue {
    let prior = prior.and_then(|v| v.to_str().ok());
    // Sized once: an address is at most 39 characters.
    let mut forwarded = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
    if let Some(prior) = prior {
        forwarded.push_str(prior);
        forwarded.push_str(", ");
    }
    let _ = write!(forwarded, "{ip}");
    HeaderValue::try_from(forwarded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn forwarded_proto(tls: bool) -> HeaderValue {
    HeaderValue::from_static(if tls { "https" } else { "http" })
}

/// After a failed connect: counts it, records it for the breaker, and
/// marks the error for a retry while the budget lasts (idempotent requests).
pub fn connect_failed(req: &RequestHeader, ctx: &mut RequestCtx, e: &mut Error) {
    if let Some(route) = &ctx.route {
        route.chain.done(&ctx.admission, Some(false));
        let kind = upstream_error(e.etype()).unwrap_or(UpstreamError::Connect);
        route.runtime.metrics.upstream_error(kind);
    }
    if ctx.admission.retries_left > 0 && idempotent(req) {
        ctx.admission.retries_left -= 1;
        if let Some(route) = &ctx.route {
            ctx.tried.push(route.spec.route_id.clone());
        }
        // The retry takes no breaker slot of its own.
        ctx.admission.target = Some(Target::Backend { breaker: false });
        e.set_retry(true);
    }
}

/// The kind of an upstream failure, for `portico_upstream_errors_total`.
pub fn upstream_error(etype: &ErrorType) -> Option<UpstreamError> {
    match etype {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => Some(UpstreamError::Timeout),
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert => Some(UpstreamError::Connect),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            Some(UpstreamError::Reset)
        }
        _ => None,
    }
}

/// The status a failed request is answered with (0: the client is gone).
pub fn failure_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}
