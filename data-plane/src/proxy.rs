//! The Pingora proxy: route lookup on the current table, round-robin choice
//! in the pool, forwarding headers, and plain-text answers when no route or
//! backend fits.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;

use crate::config::Live;
use crate::table::Backend;

pub struct Proxy {
    pub live: Arc<Live>,
}

#[derive(Default)]
pub struct RequestCtx {
    backend: Option<Arc<Backend>>,
}

/// The request's host, lower case and without a port.
fn request_host(req: &RequestHeader) -> Option<String> {
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
    Some(host.to_ascii_lowercase())
}

/// Writes a small complete response and ends the request.
pub async fn respond(session: &mut Session, status: u16, body: String) -> Result<bool> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    header.insert_header("content-length", body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        let host = request_host(req).unwrap_or_default();
        let table = self.live.table.load();
        let Some(pool) = table.lookup(&host, req.uri.path()) else {
            let body = format!("portico: no route for {host}{}\n", req.uri.path());
            return respond(session, 404, body).await;
        };
        ctx.backend = pool.pick().cloned();
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let backend = ctx
            .backend
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "pool has no backend"))?;
        let addr = backend.addr.ok_or_else(|| {
            Error::explain(
                ErrorType::HTTPStatus(502),
                format!("backend host {} could not be resolved", backend.url.host),
            )
        })?;
        let tls = backend.url.scheme.is_tls();
        Ok(Box::new(HttpPeer::new(addr, tls, backend.url.host.clone())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let forwarded = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            upstream.insert_header("x-forwarded-for", forwarded)?;
        }
        upstream.insert_header("x-forwarded-proto", "http")?;
        Ok(())
    }
}
