//! The Pingora proxy: route lookup on the current table, the choice of a
//! backend in the pool (health, breaker, drain weight, maintenance), rate
//! limits, options, response headers and per-request telemetry.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorSource;

use crate::access_log::AccessLog;
use crate::config::Live;
use crate::route_metrics::UpstreamError;
use crate::runtime::Endpoint;
use crate::table::{Choice, Pool, RouteEntry};

pub struct Proxy {
    pub live: Arc<Live>,
    pub head_limits: crate::request_checks::HeadLimits,
    /// How long a backend connection waits in the pool for reuse.
    pub upstream_idle: Duration,
    /// The TLS listener's port, for `https_redirect` (`None`: no TLS listener
    /// here, so redirects go to the default port 443).
    pub https_port: Option<u16>,
}

/// Where ACME servers fetch HTTP-01 answers.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Where this request is going.
enum Target {
    /// The route's own backend; `breaker` says a breaker slot was taken.
    Backend { breaker: bool },
    /// The route's maintenance backend.
    Maintenance,
}

pub struct RequestCtx {
    started: Instant,
    route: Option<Arc<RouteEntry>>,
    pool: Option<Arc<Pool>>,
    target: Option<Target>,
    /// The address of the route's backend the request goes to.
    endpoint: Option<Arc<Endpoint>>,
    tried: Vec<String>,
    retries_left: u8,
    /// Why the request is refused before routing, with its status, if it is.
    refused: Option<(u16, &'static str)>,
    /// Sent to the backend and back to the client as `X-Request-Id`.
    request_id: HeaderValue,
    /// The address dialled last, when the upstream was tried, and how long
    /// until its response head came.
    upstream: Option<(SocketAddr, Instant)>,
    upstream_took: Option<Duration>,
    /// The request came over TLS.
    tls: bool,
    /// Counts the request until it is done, so a stopping data plane waits for it.
    _in_flight: crate::lifecycle::InFlight,
}

/// The request's host, lower case and without a port; borrowed unless it
/// had upper-case letters.
fn request_host(req: &RequestHeader) -> Option<Cow<'_, str>> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())?;
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// Writes a small complete response and ends the request.
pub async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: String,
    retry_after: Option<u64>,
) -> Result<bool> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    if let Some(secs) = retry_after {
        header.insert_header("retry-after", secs.to_string())?;
    }
    // A refused upgrade must not leave the client waiting on a half-upgraded
    // connection.
    if session.is_upgrade_req() {
        header.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(true)
}

const MAINTENANCE_PAGE: &str = "<!doctype html><html><head><title>Down for maintenance</title></head>\
<body><h1>Down for maintenance</h1><p>This service is being updated. Please try again shortly.</p></body></html>\n";

/// The client's `X-Request-Id` when it is sane (1–128 of `A-Z a-z 0-9 - _ . : +`),
/// otherwise a new random one. One value, shared by the request to the
/// backend and the response: cloning it copies no bytes.
fn request_id(req: &RequestHeader) -> HeaderValue {
    let given = req.headers.get("x-request-id").filter(|v| {
        (1..=128).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+".contains(b))
    });
    match given {
        Some(v) => v.clone(),
        None => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = rand::random::<u128>();
            let hex: [u8; 32] = std::array::from_fn(|i| HEX[(n >> (124 - 4 * i)) as usize & 0xf]);
            // An owner-backed `Bytes` is reference-counted from the start,
            // so the two clones allocate nothing.
            HeaderValue::from_maybe_shared(Bytes::from_owner(hex))
                .expect("hex digits are a valid header value")
        }
    }
}

/// A value written into the access log as its `Display` text, without
/// building a `String` first.
struct Shown<T>(T);

impl<T: std::fmt::Display> serde::Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// One access-log line, serialized as a JSON object.
#[derive(serde::Serialize)]
#[serde(bound(serialize = "Time: std::fmt::Display"))]
struct AccessLine<'a, Time: std::fmt::Display> {
    time: Shown<Time>,
    client: Option<Shown<&'a pingora::protocols::l4::socket::SocketAddr>>,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream: Option<SocketAddr>,
    upstream_duration_ms: Option<f64>,
    route_id: Option<&'a str>,
    service: Option<&'a str>,
    request_id: &'a str,
}

/// Writes one access-log line.
fn log_access(
    log: &AccessLog,
    session: &Session,
    ctx: &RequestCtx,
    status: Option<u16>,
    took: Duration,
    (bytes_in, bytes_out): (u64, u64),
) {
    let req = session.req_header();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let host = request_host(req).unwrap_or_default();
    let line = AccessLine {
        time: Shown(portico_proto::time::rfc3339_millis_display(
            SystemTime::now() - took,
        )),
        client: session.client_addr().map(Shown),
        host: &host,
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query(),
        status,
        bytes_in,
        bytes_out,
        duration_ms: ms(took),
        upstream: ctx.upstream.map(|(a, _)| a),
        upstream_duration_ms: ctx.upstream_took.map(ms),
        route_id: ctx.route.as_ref().map(|r| r.spec.route_id.as_str()),
        service: ctx.route.as_ref().map(|r| r.spec.service.as_str()),
        request_id: ctx.request_id.to_str().unwrap_or_default(),
    };
    log.write(&line);
}

/// The kind of an upstream failure, for `portico_upstream_errors_total`.
fn upstream_error(etype: &ErrorType) -> Option<UpstreamError> {
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

fn idempotent(req: &RequestHeader) -> bool {
    matches!(
        req.method.as_str(),
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

impl Proxy {
    /// Applies the chosen route's gates; `Ok(true)` when a response was written.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: Arc<RouteEntry>,
    ) -> Result<bool> {
        let now = SystemTime::now();
        ctx.route = Some(route.clone());
        if let Some(portico_proto::settings::RateLimit { requests, window }) =
            route.policy.rate_limit
        {
            let client = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if let Some(ip) = client {
                if let Err(retry_after) = route.runtime.limiter(requests, window).check(ip) {
                    route.runtime.metrics.rate_limited();
                    let body = format!(
                        "portico: rate limit of {requests} requests per {window:?} exceeded\n"
                    );
                    return respond(
                        session,
                        429,
                        "text/plain; charset=utf-8",
                        body,
                        Some(retry_after),
                    )
                    .await;
                }
            }
        }
        if session.is_upgrade_req()
            && !(route.policy.websocket
                || matches!(
                    route.spec.backend.scheme,
                    portico_proto::Scheme::Ws | portico_proto::Scheme::Wss
                ))
        {
            let body = "portico: websocket is not enabled for this route\n".to_string();
            return respond(session, 400, "text/plain; charset=utf-8", body, None).await;
        }
        let spec = route.policy.breaker.as_ref();
        let endpoint = route.backend.pick(spec, now);
        if endpoint.is_none() && !route.backend.endpoints().list.is_empty() {
            // Every address went down or opened its breaker since the choice.
            let why = match spec {
                Some(_) => "circuit breaker open",
                None => "every backend is unhealthy",
            };
            let body = format!("portico: {why}\n");
            let retry_after = spec.map_or(1, |s| s.timeout.as_secs().max(1));
            return respond(
                session,
                503,
                "text/plain; charset=utf-8",
                body,
                Some(retry_after),
            )
            .await;
        }
        let breaker = match (spec, &endpoint) {
            (Some(spec), Some(endpoint)) => {
                let (acquired, changed) = {
                    let mut breaker = endpoint.breaker.lock();
                    let before = breaker.phase();
                    let acquired = breaker.acquire(spec, now);
                    (acquired, breaker.phase() != before)
                };
                if changed {
                    self.breaker_changed(&route);
                }
                if !acquired {
                    let body = "portico: circuit breaker open\n".to_string();
                    return respond(
                        session,
                        503,
                        "text/plain; charset=utf-8",
                        body,
                        Some(spec.timeout.as_secs().max(1)),
                    )
                    .await;
                }
                true
            }
            _ => false,
        };
        ctx.endpoint = endpoint;
        ctx.retries_left = if idempotent(session.req_header()) {
            route.policy.retries
        } else {
            0
        };
        ctx.target = Some(Target::Backend { breaker });
        Ok(false)
    }

    /// Records a breaker outcome for the route a request went to: `Some(ok)`
    /// for what the backend did, `None` when the request ended for another
    /// reason (the client went away), which counts neither way.
    fn breaker_outcome(&self, ctx: &RequestCtx, outcome: Option<bool>) {
        if let (Some(route), Some(endpoint), Some(Target::Backend { breaker: true })) =
            (&ctx.route, &ctx.endpoint, &ctx.target)
        {
            if let Some(spec) = &route.policy.breaker {
                let mut breaker = endpoint.breaker.lock();
                let before = breaker.phase();
                match outcome {
                    Some(success) => breaker.record(spec, success, SystemTime::now()),
                    None => breaker.release(),
                }
                let changed = breaker.phase() != before;
                drop(breaker);
                if changed {
                    self.breaker_changed(route);
                }
            }
        }
    }

    /// Tells the control plane at once that a breaker changed state. The
    /// state is read when sent, so reports arrive in the order of the states.
    fn breaker_changed(&self, route: &RouteEntry) {
        let backend = route.spec.backend.to_string();
        self.live.outbound.send_with(|| {
            let state = route.backend.breaker_wire(&route.spec.route_id, &backend);
            tracing::info!(route_id = %route.spec.route_id, %backend, state = %state.state, failures = state.failures, "circuit breaker changed");
            Some(portico_proto::v1::data_plane_message::Msg::BreakerChange(
                portico_proto::v1::BreakerChange {
                    state: Some(state),
                    session_id: route.spec.session_id.clone(),
                },
            ))
        });
    }

    /// What plain HTTP answers before routing: an ACME challenge this data
    /// plane holds (for any host), else `308` to https for a route with
    /// `https_redirect`.
    async fn plain_http_answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Option<Result<bool>> {
        let req = session.req_header();
        if let Some(token) = req.uri.path().strip_prefix(ACME_CHALLENGE) {
            let challenges = self.live.challenges.load();
            if let Some(answer) = challenges.get(token) {
                let body = answer.clone();
                return Some(respond(session, 200, "text/plain", body, None).await);
            }
            return None;
        }
        let redirect = ctx
            .pool
            .as_ref()
            .is_some_and(|pool| pool.entries.iter().any(|e| e.policy.https_redirect));
        if !redirect {
            return None;
        }
        let host = request_host(req).unwrap_or_default();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = https_location(&host, self.https_port, target);
        Some(redirect_to(session, &location).await)
    }
}

/// Where `https_redirect` sends a request for `host` and `target` (path and
/// query): the port is left out for 443, or when there is no TLS listener
/// here (TLS is then terminated in front, on the default port).
fn https_location(host: &str, https_port: Option<u16>, target: &str) -> String {
    let host = if host.contains(':') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    };
    match https_port {
        Some(port) if port != 443 => format!("https://{host}:{port}{target}"),
        _ => format!("https://{host}{target}"),
    }
}

/// Answers `308 Permanent Redirect` to `location` (the method and body are kept).
async fn redirect_to(session: &mut Session, location: &str) -> Result<bool> {
    let mut header = ResponseHeader::build(308, Some(3))?;
    header.insert_header("location", location)?;
    header.insert_header("content-length", "0")?;
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        crate::connections::head_read();
        RequestCtx {
            started: Instant::now(),
            route: None,
            pool: None,
            target: None,
            endpoint: None,
            tried: Vec::new(),
            retries_left: 0,
            refused: None,
            request_id: HeaderValue::from_static(""),
            upstream: None,
            upstream_took: None,
            tls: false,
            _in_flight: self.live.lifecycle.enter(),
        }
    }

    /// The route is looked up here, once per request, because compression is
    /// decided before the downstream modules read the request.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.live.lifecycle.stopping().is_some() {
            // Stopping: answer with `Connection: close`, so clients move on.
            session.set_keepalive(None);
        }
        let raw_head = session
            .as_downstream()
            .as_http1()
            .filter(|_| {
                session
                    .req_header()
                    .headers
                    .contains_key(http::header::TRANSFER_ENCODING)
            })
            .map(|h1| h1.get_headers_raw_bytes());
        ctx.refused = crate::request_checks::problem(
            session.req_header(),
            raw_head.as_deref(),
            self.head_limits,
        );
        ctx.request_id = request_id(session.req_header());
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let req = session.req_header();
        let host = request_host(req).unwrap_or_default();
        ctx.pool = self
            .live
            .table
            .load()
            .lookup(&host, req.uri.path())
            .cloned();
        let compress = ctx
            .pool
            .as_ref()
            .is_some_and(|pool| pool.entries.iter().any(|e| e.policy.compression));
        if compress {
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(6);
            }
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some((status, why)) = ctx.refused {
            session.set_keepalive(None);
            let body = format!("portico: {why}\n");
            return respond(session, status, "text/plain; charset=utf-8", body, None).await;
        }
        if !ctx.tls {
            if let Some(answered) = self.plain_http_answer(session, ctx).await {
                return answered;
            }
        }
        let Some(pool) = ctx.pool.clone() else {
            let req = session.req_header();
            let host = request_host(req).unwrap_or_default();
            let body = format!("portico: no route for {host}{}\n", req.uri.path());
            return respond(session, 404, "text/plain; charset=utf-8", body, None).await;
        };
        match pool.choose(SystemTime::now(), &[]) {
            Choice::Route(route) => self.admit(session, ctx, route).await,
            Choice::Maintenance(route) => {
                ctx.route = Some(route.clone());
                match route.maintenance.as_ref().and_then(|m| m.as_ref()) {
                    Some(_) => {
                        ctx.target = Some(Target::Maintenance);
                        Ok(false)
                    }
                    None => {
                        respond(
                            session,
                            503,
                            "text/html; charset=utf-8",
                            MAINTENANCE_PAGE.to_string(),
                            Some(30),
                        )
                        .await
                    }
                }
            }
            Choice::Unavailable(why) => {
                ctx.route = pool.entries.first().cloned();
                let req = session.req_header();
                let host = request_host(req).unwrap_or_default();
                let body = format!("portico: {why} for {host}{}\n", req.uri.path());
                respond(session, 503, "text/plain; charset=utf-8", body, Some(1)).await
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // A retry goes to another backend of the pool, or to the next
        // address of the same one.
        if !ctx.tried.is_empty() {
            let now = SystemTime::now();
            if let Some(Choice::Route(route)) = ctx.pool.as_ref().map(|p| p.choose(now, &ctx.tried))
            {
                if !ctx.route.as_ref().is_some_and(|r| Arc::ptr_eq(r, &route)) {
                    ctx.endpoint = None;
                }
                ctx.route = Some(route);
            }
            if let Some(route) = &ctx.route {
                if let Some(next) = route.backend.pick(route.policy.breaker.as_ref(), now) {
                    ctx.endpoint = Some(next);
                }
            }
        }
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "no backend chosen"))?;
        let (url, addr) = match (&ctx.target, &route.maintenance) {
            (Some(Target::Maintenance), Some(Some(m))) => {
                (&m.url, m.name.current().addrs.first().copied())
            }
            _ => (&route.spec.backend, ctx.endpoint.as_ref().map(|e| e.addr)),
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
        peer.options.idle_timeout = Some(self.upstream_idle);
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

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream.insert_header("x-request-id", ctx.request_id.clone())?;
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            use std::fmt::Write;
            let prior = upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            // Sized once: an address is at most 39 characters.
            let mut forwarded = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
            if let Some(prior) = prior {
                forwarded.push_str(prior);
                forwarded.push_str(", ");
            }
            let _ = write!(forwarded, "{ip}");
            upstream.insert_header("x-forwarded-for", forwarded)?;
        }
        let proto = if ctx.tls { "https" } else { "http" };
        upstream.insert_header("x-forwarded-proto", HeaderValue::from_static(proto))?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = &ctx.route {
            for (name, value) in &route.policy.headers {
                response.insert_header(name.clone(), value.clone())?;
            }
        }
        if ctx.upstream.is_some() {
            response.insert_header("x-request-id", ctx.request_id.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_took = ctx.upstream.map(|(_, started)| started.elapsed());
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.breaker_outcome(ctx, Some(false));
        if let Some(route) = &ctx.route {
            let kind = upstream_error(e.etype()).unwrap_or(UpstreamError::Connect);
            route.runtime.metrics.upstream_error(kind);
        }
        if ctx.retries_left > 0 && idempotent(session.req_header()) {
            ctx.retries_left -= 1;
            if let Some(route) = &ctx.route {
                ctx.tried.push(route.spec.route_id.clone());
            }
            // The retry takes its own breaker slot only if it reaches a gate again;
            // keep it simple: no slot accounting for retries.
            ctx.target = Some(Target::Backend { breaker: false });
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
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
        };
        if code > 0 {
            let _ = session.respond_error(code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16());
        let outcome = match e {
            None => Some(status.is_some_and(|s| s < 500)),
            Some(e) if e.esource() == &ErrorSource::Upstream => Some(false),
            Some(_) => None,
        };
        self.breaker_outcome(ctx, outcome);
        let took = ctx.started.elapsed();
        let metrics = ctx
            .route
            .as_ref()
            .map_or(&self.live.unrouted, |r| &r.runtime.metrics);
        if let Some(status) = status {
            metrics.request(status, took);
        }
        // Connect failures were counted per attempt in `fail_to_connect`.
        if let Some(kind) = e
            .filter(|e| e.esource() == &ErrorSource::Upstream)
            .and_then(|e| upstream_error(e.etype()))
            .filter(|k| *k != UpstreamError::Connect)
        {
            metrics.upstream_error(kind);
        }
        let (sent, read) = (
            session.body_bytes_sent() as u64,
            session.body_bytes_read() as u64,
        );
        if let Some(route) = &ctx.route {
            route
                .runtime
                .record(status, took.as_secs_f64() * 1000.0, sent, read);
        }
        if let Some(log) = &self.live.access_log {
            log_access(log, session, ctx, status, took, (read, sent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(id: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(id) = id {
            req.insert_header("x-request-id", id).unwrap();
        }
        req
    }

    #[test]
    fn redirects_name_the_tls_port_unless_it_is_443() {
        assert_eq!(
            https_location("a.test", Some(8443), "/p?q=1"),
            "https://a.test:8443/p?q=1"
        );
        assert_eq!(
            https_location("a.test", Some(443), "/p?q=1"),
            "https://a.test/p?q=1"
        );
        assert_eq!(https_location("a.test", None, "/"), "https://a.test/");
        assert_eq!(
            https_location("::1", Some(8443), "/"),
            "https://[::1]:8443/"
        );
    }

    #[test]
    fn a_sane_request_id_is_kept_and_any_other_is_replaced_by_32_hex_digits() {
        assert_eq!(request_id(&head(Some("abc-1.2:3+_"))), "abc-1.2:3+_");
        let made = [
            request_id(&head(None)),
            request_id(&head(Some("has space"))),
        ];
        for id in &made {
            let text = id.to_str().unwrap();
            assert_eq!(text.len(), 32, "{text}");
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(made[0], made[1]);
        assert_ne!(
            request_id(&head(Some(&"a".repeat(129)))),
            "a".repeat(129).as_str()
        );
    }
}
