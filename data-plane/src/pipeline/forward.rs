//! The fast path: a request read with pingora-core's server session, admitted
//! by the gate, and forwarded over a kept or pooled HTTP/1.1 backend
//! connection in this one task, without `pingora-proxy`'s spawned halves and
//! channels. What it does not carry goes to `pingora-proxy`, the head replayed.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Version};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as ServerSessionV1;
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType, OrErr, Result};

use crate::edge::connections::ServeHttp1;
use crate::observe::route_metrics::Path;
use crate::pipeline::answer;
use crate::pipeline::attached::Attached;
use crate::pipeline::ctx::{Ended, RequestCtx, X_REQUEST_ID};
use crate::pipeline::gate::Gate;
use crate::pipeline::proxy::Proxy;
use crate::pipeline::upstream;

/// Request bodies up to this size (with a `Content-Length`) take the fast
/// path. They are read whole before the backend is dialled, so the request
/// can be sent again when a kept connection turns out closed, and a backend
/// that answers before reading cannot stall their sending.
const FAST_BODY_MAX: usize = 64 * 1024;

/// Hop-by-hop request headers, not forwarded (RFC 9110 section 7.6.1);
/// `Upgrade` too, since the fast path carries no upgrade.
const HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

pub struct Forwarder {
    gate: Arc<Gate>,
    /// `pingora-proxy`, for what the fast path does not carry.
    proxy: Arc<HttpProxy<Proxy>>,
    /// Backend connections, pooled per address.
    connector: Arc<TransportConnector>,
    /// Off: every request goes to `pingora-proxy` (`--fast-path off`).
    enabled: bool,
}

impl Forwarder {
    pub fn new(gate: Arc<Gate>, conf: &Arc<ServerConf>, enabled: bool) -> Forwarder {
        let proxy = pingora::proxy::http_proxy(conf, Proxy::new(gate.clone()));
        Forwarder {
            gate,
            proxy: Arc::new(proxy),
            connector: Arc::new(TransportConnector::new(Some(
                ConnectorOptions::from_server_conf(conf),
            ))),
            enabled,
        }
    }

    /// Hands a request the fast path read back to `pingora-proxy`: a new
    /// session on the same connection reads the same bytes again (the head
    /// as received, then `rest`).
    async fn replay(
        self: &Arc<Self>,
        session: ServerSession,
        rest: Bytes,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let ServerSession::H1(read) = session else {
            return self.proxy.process_new_http(session, shutdown).await;
        };
        let head = read.get_headers_raw_bytes();
        let mut again = BytesMut::with_capacity(head.len() + rest.len());
        again.extend_from_slice(&head);
        again.extend_from_slice(&rest);
        let keepalive = read.get_keepalive_timeout();
        let reuses = read.get_keepalive_reuses_remaining();
        let mut fresh = ServerSessionV1::new(read.into_inner());
        fresh.set_pipelined_prefix(again);
        let mut fresh = ServerSession::H1(fresh);
        fresh.set_keepalive(keepalive);
        fresh.set_keepalive_reuses_remaining(reuses);
        self.proxy.process_new_http(fresh, shutdown).await
    }

    /// Whether the fast path carries this request (read from its head alone):
    /// an origin-form target, no upgrade, no `Expect`, no chunked or large body.
    fn carries(&self, session: &mut ServerSession) -> bool {
        if session.is_upgrade_req() {
            return false;
        }
        let head = session.req_header();
        // The head goes to the backend rebuilt from its parsed URI: a
        // target the URI does not spell byte for byte goes as Pingora sends it.
        let target = head.uri.path_and_query().map(|p| p.as_str().as_bytes());
        if target != Some(head.raw_path())
            || head.method == Method::CONNECT
            || head.headers.contains_key(header::EXPECT)
            || head.headers.contains_key(header::TRANSFER_ENCODING)
        {
            return false;
        }
        let length = head.headers.get(header::CONTENT_LENGTH);
        match length {
            None => session.is_body_empty(),
            Some(v) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .is_some_and(|n| n <= FAST_BODY_MAX),
        }
    }

    /// The request's context, when the fast path carries it: by its head
    /// (`carries`) and its pool (no compression, no HTTP/2 backend).
    fn open(&self, session: &mut ServerSession) -> Option<RequestCtx> {
        if !self.carries(session) {
            return None;
        }
        let mut ctx = RequestCtx::new(self.gate.live.lifecycle.enter());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        self.gate.open(&mut ctx, session.req_header(), tls);
        if ctx.pool.as_ref().is_some_and(|pool| !pool.fast) {
            return None;
        }
        Some(ctx)
    }

    /// One request: admitted, answered or forwarded, and counted. Gives the
    /// session back with whether its connection may serve another request
    /// (`None`: it ended in a way that leaves nothing to finish).
    async fn serve(
        &self,
        mut session: ServerSession,
        mut ctx: RequestCtx,
        conn: &mut Attached,
    ) -> Option<(ServerSession, bool)> {
        if self.gate.stopping() {
            session.set_keepalive(None);
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let upgrade = false;
        let answered = self
            .gate
            .admit(session.req_header(), None, client, upgrade, &mut ctx);
        let result = match answered {
            Some(a) => answer::write_to(&mut session, a).await,
            None => self.forward(&mut session, &mut ctx, client, conn).await,
        };
        let ok = match &result {
            Ok(()) => true,
            Err(e) => self.failed(&mut session, &ctx, e).await,
        };
        self.gate.finish(
            &ctx,
            Ended {
                head: session.req_header(),
                client: session.client_addr(),
                status: session.response_written().map(|r| r.status.as_u16()),
                error: result.as_ref().err().map(|e| &**e),
                read: session.body_bytes_read() as u64,
                sent: session.body_bytes_sent() as u64,
                path: Path::Fast,
            },
        );
        Some((session, ok))
    }

    /// After a failure: answers it when no response began (as Pingora's
    /// proxy does), and says whether the connection may be kept (never).
    async fn failed(&self, session: &mut ServerSession, ctx: &RequestCtx, e: &Error) -> bool {
        let route = ctx.route.as_ref().map(|r| r.spec.route_id.as_str());
        let request_id = ctx.request_id.to_str().unwrap_or_default();
        tracing::warn!(route_id = route, request_id, error = %e, "request failed");
        if session.response_written().is_none() {
            let code = upstream::failure_status(e);
            if code > 0 {
                session.set_keepalive(None);
                let _ = session.respond_error(code).await;
            }
        }
        false
    }

    /// Dials the backend (the next one on a failed connect, while retries
    /// last), sends the request and copies the response back.
    async fn forward(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        client: Option<std::net::IpAddr>,
        conn: &mut Attached,
    ) -> Result<()> {
        // A body the fast path carries is small: read whole first, it can
        // be sent again when a kept connection turns out closed.
        let body = if session.is_body_empty() {
            None
        } else {
            let mut whole = BytesMut::new();
            while let Some(chunk) = session
                .read_request_body()
                .await
                .map_err(|e| e.into_down())?
            {
                whole.extend_from_slice(&chunk);
            }
            Some(whole.freeze())
        };
        let mut fresh_only = false;
        loop {
            let peer = upstream::peer(ctx, self.gate.upstream_idle)?;
            let (mut upstream_session, reused) = match self.dial(&peer, fresh_only, conn).await {
                Ok(dialled) => dialled,
                Err(mut e) => {
                    e.as_up();
                    upstream::connect_failed(session.req_header(), ctx, &mut e);
                    if e.retry() {
                        continue;
                    }
                    return Err(e);
                }
            };
            let request = upstream_request(session.req_header(), ctx, client)?;
            match self
                .exchange(
                    session,
                    &mut upstream_session,
                    (&peer, request, body.as_ref()),
                    ctx,
                )
                .await
            {
                // A kept or pooled connection the backend had closed: once
                // more on a new one.
                Err(Sent::Stale(_)) if reused && !fresh_only => fresh_only = true,
                Err(Sent::Stale(e)) | Err(Sent::Failed(e)) => return Err(e),
                Ok(()) => {
                    upstream_session.respect_keepalive();
                    if let Some(stream) = upstream_session.reuse().await {
                        let idle = peer.options.idle_timeout;
                        conn.keep(stream, peer.reuse_hash(), idle, &self.connector);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// A backend connection: the one the client connection kept, or one
    /// from the pool, unless `fresh_only`; with whether it was used before.
    async fn dial(
        &self,
        peer: &HttpPeer,
        fresh_only: bool,
        conn: &mut Attached,
    ) -> Result<(ClientSession, bool)> {
        let kept = conn.take(peer.reuse_hash()).filter(|_| !fresh_only);
        let (stream, reused) = match kept {
            Some(stream) => (stream, true),
            None if fresh_only => (self.connector.new_stream(peer).await?, false),
            None => self.connector.get_stream(peer).await?,
        };
        Ok((ClientSession::new_with_options(stream, peer), reused))
    }

    /// Sends the request and copies the response back.
    async fn exchange(
        &self,
        session: &mut ServerSession,
        upstream_session: &mut ClientSession,
        (peer, request, body): (&HttpPeer, Box<RequestHeader>, Option<&Bytes>),
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Sent> {
        upstream_session.read_timeout = peer.options.read_timeout;
        upstream_session.write_timeout = peer.options.write_timeout;
        let stale = |e: Box<Error>| Sent::Stale(e.into_up());
        upstream_session
            .write_request_header(request)
            .await
            .map_err(stale)?;
        if let Some(body) = body {
            upstream_session.write_body(body).await.map_err(stale)?;
            upstream_session.finish_body().await.map_err(stale)?;
        }
        // Informational answers (100, 103) are not passed on: the fast path
        // takes no `Expect` and no upgrade.
        loop {
            upstream_session.read_response().await.map_err(stale)?;
            match upstream_session.get_status() {
                Some(s) if s.is_informational() => continue,
                _ => break,
            }
        }
        ctx.upstream_took = ctx.upstream.map(|(_, started)| started.elapsed());
        let failed = |e: Box<Error>| Sent::Failed(e);
        let mut response = match upstream_session.resp_header() {
            Some(read) => client_response(read).map_err(failed)?,
            None => return Err(failed(Error::new_up(ErrorType::InvalidHTTPHeader))),
        };
        let head_only = session.req_header().method == Method::HEAD
            || matches!(response.status.as_u16(), 204 | 304);
        let body_done = upstream_session.is_body_done();
        if session.as_http1().is_some() && !head_only && !body_done {
            keep_client_alive(&mut response).map_err(failed)?;
        }
        self.gate
            .response_headers(&mut response, ctx)
            .map_err(failed)?;
        session
            .write_response_header(response)
            .await
            .map_err(|e| failed(e.into_down()))?;
        copy_body(session, upstream_session).await.map_err(failed)?;
        session
            .finish_body()
            .await
            .map_err(|e| failed(e.into_down()))
    }
}

/// How an exchange with the backend failed: `Stale` before any of its
/// response came (a pooled connection may have been closed under it).
enum Sent {
    Stale(Box<Error>),
    Failed(Box<Error>),
}

/// The request head for the backend: hop-by-hop headers dropped, HTTP/1.1,
/// `Host` from an HTTP/2 request's authority, and Portico's own headers.
/// Built without Pingora's header-case map (header names are
/// case-insensitive), so Portico's headers go in without parsing names.
fn upstream_request(
    head: &RequestHeader,
    ctx: &RequestCtx,
    client: Option<std::net::IpAddr>,
) -> Result<Box<RequestHeader>> {
    let mut parts = head.as_owned_parts();
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    if let Some(connection) = headers.remove(header::CONNECTION) {
        for name in connection.to_str().unwrap_or_default().split(',') {
            headers.remove(name.trim());
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if head.version == Version::HTTP_2 && !headers.contains_key(header::HOST) {
        if let Some(authority) = head.uri.authority() {
            let host = HeaderValue::from_str(authority.as_str())
                .or_err(ErrorType::InvalidHTTPHeader, "request authority")?;
            headers.insert(header::HOST, host);
        }
    }
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    if let Some(ip) = client {
        let value = upstream::forwarded_for(headers.get(upstream::X_FORWARDED_FOR), ip);
        headers.insert(upstream::X_FORWARDED_FOR, value);
    }
    headers.insert(
        upstream::X_FORWARDED_PROTO,
        upstream::forwarded_proto(ctx.tls),
    );
    if let Some(host) = upstream::backend_host(ctx) {
        headers.insert(header::HOST, host);
    }
    if let Some(uri) = upstream::backend_target(ctx, &head.uri) {
        parts.uri = uri;
    }
    Ok(Box::new(RequestHeader::from(parts)))
}

/// The response head for the client: the backend's, without the
/// header-case map (as the request), so the route's headers go in cheaply.
fn client_response(read: &ResponseHeader) -> Result<Box<ResponseHeader>> {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = read.status;
    parts.version = read.version;
    parts.headers = read.headers.clone();
    let mut response = Box::new(ResponseHeader::from(parts));
    if let Some(reason) = read.get_reason_phrase() {
        response.set_reason_phrase(Some(reason))?;
    }
    Ok(response)
}

/// A response with neither length nor chunking ends when the backend closes;
/// sent chunked instead, the client's connection outlives it.
fn keep_client_alive(response: &mut ResponseHeader) -> Result<()> {
    let framed = response.headers.contains_key(header::TRANSFER_ENCODING)
        || response.headers.contains_key(header::CONTENT_LENGTH);
    if !framed {
        response.set_version(Version::HTTP_11);
        response.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// Copies the response body from the backend to the client as it comes,
/// straight from the backend session's buffer on HTTP/1.
async fn copy_body(
    session: &mut ServerSession,
    upstream_session: &mut ClientSession,
) -> Result<()> {
    loop {
        let chunk = match upstream_session.read_body_ref().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.into_up()),
        };
        let written = match &mut *session {
            ServerSession::H1(h1) => h1.write_body(chunk).await.map(|_| ()),
            other => {
                other
                    .write_response_body(Bytes::copy_from_slice(chunk), false)
                    .await
            }
        };
        written.map_err(|e| e.into_down())?;
    }
}

#[async_trait]
impl ServeHttp1 for Forwarder {
    type Conn = Attached;

    fn hold_for(conn: &Attached) -> Option<std::time::Duration> {
        conn.held_for()
    }

    fn release(conn: &mut Attached) {
        conn.release();
    }

    /// Serves one HTTP/1 request whose head came whole in the session's
    /// first bytes; `rest` is what followed the head in them.
    async fn serve_h1(
        self: &Arc<Self>,
        mut session: ServerSession,
        rest: Bytes,
        conn: &mut Attached,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !self.enabled {
            return self.proxy.process_new_http(session, shutdown).await;
        }
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            // As Pingora's proxy does: a malformed head is answered 400,
            // and the connection closed.
            Err(e) => {
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    let _ = session.respond_error(400).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        let Some(ctx) = self.open(&mut session) else {
            return self.replay(session, rest, shutdown).await;
        };
        let settings = HttpPersistentSettings::for_session(&session);
        let (session, ok) = self.serve(session, ctx, conn).await?;
        let reusable = match session.finish().await {
            Ok(Some(reusable)) if ok => reusable,
            _ => return None,
        };
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

#[async_trait]
impl HttpServerApp for Forwarder {
    /// HTTP/2 streams, and HTTP/1 requests whose head did not come whole in
    /// the first read: the fast path decides on a parsed head, and replays a
    /// head only when it has all of its bytes.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !self.enabled || !session.is_http2() {
            return self.proxy.process_new_http(session, shutdown).await;
        }
        // An HTTP/2 stream's head is parsed already: nothing to replay.
        let _ = session.read_request().await;
        let Some(ctx) = self.open(&mut session) else {
            return self.proxy.process_new_http(session, shutdown).await;
        };
        // A stream is not a connection: the backend connection goes back
        // to the pool when it ends.
        let (session, _) = self.serve(session, ctx, &mut Attached::default()).await?;
        let _ = session.finish().await;
        None
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options()
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.proxy.h2_options()
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
