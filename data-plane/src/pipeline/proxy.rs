//! Pingora's phase callbacks, for what the fast path (`forward`) leaves to
//! `pingora-proxy`: upgrades, compression, HTTP/2 backends, request bodies
//! it does not carry. Each phase calls the shared `Gate`.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;

use crate::observe::route_metrics::Path;
use crate::pipeline::answer;
use crate::pipeline::ctx::{Ended, RequestCtx};
use crate::pipeline::gate::Gate;
use crate::pipeline::upstream;

pub struct Proxy {
    gate: Arc<Gate>,
}

impl Proxy {
    pub fn new(gate: Arc<Gate>) -> Proxy {
        Proxy { gate }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        crate::edge::connections::head_read();
        RequestCtx::new(self.gate.live.lifecycle.enter())
    }

    /// The route is looked up here, once per request, because compression is
    /// decided before the downstream modules read the request.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.gate.stopping() {
            // Stopping: answer with `Connection: close`, so clients move on.
            session.set_keepalive(None);
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        self.gate.open(ctx, session.req_header(), tls);
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
        let head = session.req_header();
        let raw_head = session
            .as_downstream()
            .as_http1()
            .filter(|_| head.headers.contains_key(http::header::TRANSFER_ENCODING))
            .map(|h1| h1.get_headers_raw_bytes());
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let upgrade = session.is_upgrade_req();
        match self
            .gate
            .admit(head, raw_head.as_deref(), client, upgrade, ctx)
        {
            Some(a) => answer::write(session, a).await,
            None => Ok(false),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        upstream::peer(ctx, self.gate.upstream_idle)
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
        self.gate.response_headers(response, ctx)
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
        let end = Ended {
            head: session.req_header(),
            client: session.client_addr(),
            status: session.response_written().map(|r| r.status.as_u16()),
            error: e,
            read: session.body_bytes_read() as u64,
            sent: session.body_bytes_sent() as u64,
            path: Path::Proxy,
        };
        self.gate.finish(ctx, end);
    }
}
