//! Pingora's phase callbacks: look the route up, run the edge, pool and
//! route filter chains (any may answer), forward to the chosen backend, and
//! count the request. No filter is known here by name.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorSource;

use crate::config::live::Live;
use crate::config::table::Choice;
use crate::filters::{self, request_checks::HeadLimits};
use crate::observe::route_metrics::UpstreamError;
use crate::pipeline::answer;
use crate::pipeline::chain::{Answer, Chain, Flow, Request};
use crate::pipeline::ctx::{request_host, request_id, RequestCtx};
use crate::pipeline::upstream;

pub struct Proxy {
    live: Arc<Live>,
    /// Runs on every request before routing.
    edge: Chain,
    /// How long a backend connection waits in the pool for reuse.
    upstream_idle: Duration,
    /// The TLS listener's port, for `https_redirect` (`None`: no TLS listener
    /// here, so redirects go to the default port 443).
    https_port: Option<u16>,
}

impl Proxy {
    pub fn new(
        live: Arc<Live>,
        head_limits: HeadLimits,
        upstream_idle: Duration,
        https_port: Option<u16>,
    ) -> Proxy {
        let edge = filters::edge_chain(head_limits, live.challenges.clone());
        Proxy {
            live,
            edge,
            upstream_idle,
            https_port,
        }
    }

    /// Runs the chains in order: the edge, the pool's, then the chosen
    /// route's; the answer of the first filter that gives one.
    fn admit(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Answer> {
        let head = session.req_header();
        let raw_head = session
            .as_downstream()
            .as_http1()
            .filter(|_| head.headers.contains_key(http::header::TRANSFER_ENCODING))
            .map(|h1| h1.get_headers_raw_bytes());
        let req = Request {
            head,
            raw_head: raw_head.as_deref(),
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            tls: ctx.tls,
            https_port: self.https_port,
            upgrade: session.is_upgrade_req(),
            now: SystemTime::now(),
        };
        if let Flow::Answer(a) = self.edge.run(&req, &mut ctx.admission) {
            return Some(a);
        }
        let Some(pool) = ctx.pool.clone() else {
            let (host, path) = (req.host(), head.uri.path());
            return Some(Answer::text(
                404,
                format!("portico: no route for {host}{path}\n"),
            ));
        };
        if let Flow::Answer(a) = pool.chain.run(&req, &mut ctx.admission) {
            return Some(a);
        }
        let route = match pool.choose(req.now, &[]) {
            Choice::Route(route) | Choice::Maintenance(route) => route,
            Choice::Unavailable(why) => {
                ctx.route = pool.entries.first().cloned();
                let (host, path) = (req.host(), head.uri.path());
                let body = format!("portico: {why} for {host}{path}\n");
                return Some(Answer::text(503, body).retry_after(1));
            }
        };
        ctx.route = Some(route.clone());
        match route.chain.run(&req, &mut ctx.admission) {
            Flow::Answer(a) => Some(a),
            Flow::Next => None,
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        crate::edge::connections::head_read();
        RequestCtx::new(self.live.lifecycle.enter())
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
        match self.admit(session, ctx) {
            Some(a) => answer::write(session, a).await,
            None => Ok(false),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        upstream::peer(ctx, self.upstream_idle)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        upstream::forwarded_headers(upstream, ctx, client)
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
        upstream::connect_failed(session.req_header(), ctx, &mut e);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = upstream::failure_status(e);
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
        if let Some(route) = &ctx.route {
            route.chain.done(&ctx.admission, outcome);
        }
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
            .and_then(|e| upstream::upstream_error(e.etype()))
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
            crate::observe::access_line::log_access(log, session, ctx, status, took, (read, sent));
        }
    }
}
