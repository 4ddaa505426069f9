//! The floor for the throughput benchmark: Pingora proxying every request to
//! one fixed upstream with no routing, policy or telemetry.
//! Usage: bare_proxy LISTEN UPSTREAM (e.g. 127.0.0.1:18093 127.0.0.1:18090)

#[path = "support/server.rs"]
mod support;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_proxy LISTEN UPSTREAM");
    };
    let mut server = support::one_worker();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.parse()?,
        },
    );
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever()
}
