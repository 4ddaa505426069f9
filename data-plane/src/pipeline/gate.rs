//! What both request paths (Pingora's proxy and the fast path) share: what
//! is read from a request's head, the filter chains that admit it, the
//! response headers a route adds, and the accounting once it ended.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::ErrorSource;

use crate::config::live::Live;
use crate::config::table::Choice;
use crate::filters::{self, request_checks::HeadLimits};
use crate::observe::route_metrics::UpstreamError;
use crate::pipeline::chain::{Answer, Chain, Flow, Request};
use crate::pipeline::client_ip::{real_client, Client};
use crate::pipeline::ctx::{request_host, request_id, Ended, RequestCtx, X_REQUEST_ID};
use crate::pipeline::upstream;
use portico_proto::ip_set::IpSet;

pub struct Gate {
    pub live: Arc<Live>,
    /// Runs on every request before routing.
    edge: Chain,
    /// How long a backend connection waits in the pool for reuse.
    pub upstream_idle: Duration,
    /// The TLS listener's port, for `https_redirect` (`None`: no TLS listener
    /// here, so redirects go to the default port 443).
    https_port: Option<u16>,
    /// `--trusted-proxies`: whose forwarding headers name the client.
    trusted: IpSet,
}

impl Gate {
    pub fn new(
        live: Arc<Live>,
        head_limits: HeadLimits,
        upstream_idle: Duration,
        https_port: Option<u16>,
        trusted: IpSet,
    ) -> Gate {
        let edge = filters::edge_chain(head_limits, live.challenges.clone());
        Gate {
            live,
            edge,
            upstream_idle,
            https_port,
            trusted,
        }
    }

    /// A stop has begun: answers go out with `Connection: close`.
    pub fn stopping(&self) -> bool {
        self.live.lifecycle.stopping().is_some()
    }

    /// Reads what the request's context needs from its head: its id, and
    /// the pool its host and path route to (looked up once per request).
    pub fn open(&self, ctx: &mut RequestCtx, head: &RequestHeader, tls: bool) {
        ctx.request_id = request_id(head);
        ctx.tls = tls;
        let host = request_host(head).unwrap_or_default();
        ctx.pool = self
            .live
            .table
            .load()
            .lookup(&host, head.uri.path())
            .cloned();
    }

    /// Runs the chains in order: the edge, the pool's, then the chosen
    /// route's; the answer of the first filter that gives one. `peer` is
    /// the connection's address; the client is found from it.
    pub fn admit(
        &self,
        head: &RequestHeader,
        raw_head: Option<&[u8]>,
        peer: Option<IpAddr>,
        upgrade: bool,
        ctx: &mut RequestCtx,
    ) -> Option<Answer> {
        ctx.client = peer.map(|p| real_client(p, &head.headers, &self.trusted));
        if let Some(Client::Malformed(_)) = ctx.client {
            let malformed = &self.live.malformed_client;
            malformed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let client = ctx.client.map(Client::ip);
        let req = Request {
            head,
            raw_head,
            client,
            tls: ctx.tls,
            https_port: self.https_port,
            upgrade,
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

    /// The route's own response headers, and the request id on a response
    /// that came from a backend.
    pub fn response_headers(
        &self,
        response: &mut ResponseHeader,
        ctx: &RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(route) = &ctx.route {
            let own = &route.policy.headers;
            for (name, value) in own {
                response.insert_header(name.clone(), value.clone())?;
            }
            let defaults = self.live.defaults.load();
            for (name, value) in &defaults.headers {
                if !own.iter().any(|(n, _)| n == name) {
                    response.insert_header(name.clone(), value.clone())?;
                }
            }
        }
        if ctx.upstream.is_some() {
            response.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        }
        Ok(())
    }

    /// Counts the ended request (its route's filters, metrics and window)
    /// and writes its access-log line.
    pub fn finish(&self, ctx: &RequestCtx, end: Ended<'_>) {
        let outcome = match end.error {
            None => Some(end.status.is_some_and(|s| s < 500)),
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
        if let Some(status) = end.status {
            metrics.request(status, took, end.path);
        }
        // Connect failures were counted per attempt in `connect_failed`.
        if let Some(kind) = end
            .error
            .filter(|e| e.esource() == &ErrorSource::Upstream)
            .and_then(|e| upstream::upstream_error(e.etype()))
            .filter(|k| *k != UpstreamError::Connect)
        {
            metrics.upstream_error(kind);
        }
        if let Some(route) = &ctx.route {
            route
                .runtime
                .record(end.status, took.as_secs_f64() * 1000.0, end.sent, end.read);
        }
        let quiet = ctx.pool.is_none() && self.live.defaults.load().unrouted_metrics_only;
        if let Some(log) = self.live.access_log.as_ref().filter(|_| !quiet) {
            crate::observe::access_line::log_access(log, &end, ctx, took, &self.live.pii);
        }
    }
}
