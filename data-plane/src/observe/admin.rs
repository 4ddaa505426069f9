//! The data plane's admin listener: `/healthz` while the process runs, and
//! `/ready` once a configuration from the control plane is applied (503 again
//! once stopping),
//! `/config`, the routes served now, `/metrics` for Prometheus, and
//! `/debug/counts`, the sizes of the runtime state kept per route.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::live::Live;

pub struct AdminApp {
    pub live: Arc<Live>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let ready = self.live.ready.load(Ordering::Acquire);
        let version = self.live.version.load(Ordering::Acquire);
        if path == "/metrics" {
            let body = crate::observe::metrics::page(&self.live);
            return Response::builder()
                .status(200)
                .header("content-type", portico_proto::metrics::content_type())
                .header("content-length", body.len())
                .body(body.as_bytes().to_vec())
                .unwrap_or_default();
        }
        let (status, body) = match path {
            "/healthz" => (200, "ok\n".to_string()),
            "/config" => (
                200,
                crate::observe::view::config_json(
                    version,
                    &self.live.table.load(),
                    &self.live.certs.load(),
                )
                .to_string(),
            ),
            "/ready" => {
                let source = if self.live.from_cache.load(Ordering::Acquire) {
                    "cache"
                } else if ready {
                    "control_plane"
                } else {
                    "none"
                };
                // A stopping plane is not ready: load balancers stop sending.
                let stopping = self.live.lifecycle.stopping().is_some();
                let ready = ready && !stopping;
                (
                    if ready { 200 } else { 503 },
                    format!(
                        "{{\"ready\":{ready},\"stopping\":{stopping},\"version\":{version},\"source\":\"{source}\"}}\n"
                    ),
                )
            }
            "/debug/counts" => {
                let (runtime_routes, runtime_backends, counters, limiters) =
                    self.live.registry.counts();
                let counts = serde_json::json!({
                    "routes": self.live.table.load().len(),
                    "runtime_routes": runtime_routes,
                    "runtime_backends": runtime_backends,
                    "counters": counters,
                    "limiters": limiters,
                    "probes": self.live.probes.load(Ordering::Acquire),
                    "backend_names": self.live.registry.names.len(),
                    "in_flight": self.live.lifecycle.in_flight(),
                    "client_connections": self.live.connections.open(),
                    "client_connections_refused": self.live.connections.refused(),
                    "leftover_stats": self.live.leftover_stats.lock().len(),
                });
                (200, format!("{counts}\n"))
            }
            _ => (404, "not found\n".to_string()),
        };
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .header("content-length", body.len())
            .body(body.into_bytes())
            .unwrap_or_default()
    }
}
