//! The floor of Portico's fast path: pingora-core's HTTP/1 sessions and
//! connection pool forwarding every request to one fixed upstream in one
//! task, with no routing, policy or telemetry (`bare_proxy` is the floor of
//! the `pingora-proxy` path). Usage: bare_core LISTEN UPSTREAM

#[path = "support/server.rs"]
mod support;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora::upstreams::peer::{HttpPeer, Peer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct BareCore {
    peer: HttpPeer,
    connector: TransportConnector,
}

impl BareCore {
    /// Forwards one request; whether the client connection may be reused.
    async fn forward(&self, session: &mut ServerSession) -> Result<()> {
        let (stream, _) = self.connector.get_stream(&self.peer).await?;
        let mut upstream = ClientSession::new_with_options(stream, &self.peer);
        upstream
            .write_request_header(Box::new(session.req_header().clone()))
            .await?;
        upstream.read_response().await?;
        let response = Box::new(upstream.resp_header().expect("just read").clone());
        session.write_response_header(response).await?;
        while let Some(chunk) = upstream.read_body_ref().await? {
            if let ServerSession::H1(h1) = session {
                h1.write_body(chunk).await?;
            }
        }
        session.finish_body().await?;
        upstream.respect_keepalive();
        if let Some(stream) = upstream.reuse().await {
            self.connector
                .release_stream(stream, self.peer.reuse_hash(), None);
        }
        Ok(())
    }
}

#[async_trait]
impl HttpServerApp for BareCore {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        self.forward(&mut session).await.ok()?;
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_core LISTEN UPSTREAM");
    };
    let mut server = support::one_worker();
    let upstream: std::net::SocketAddr = upstream.parse()?;
    let app = BareCore {
        peer: HttpPeer::new(upstream, false, String::new()),
        connector: TransportConnector::new(Some(ConnectorOptions::from_server_conf(
            &server.configuration,
        ))),
    };
    let mut service = Service::new("bare_core".to_string(), app);
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
