//! The control plane's admin listener: `GET /healthz`, `GET /ready`,
//! `GET /metrics` for Prometheus, the dashboard (`/`) and its JSON API
//! (`/api/v1/…`), and `GET /debug/counts`, the sizes of what is kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::committer::SubscriberCount;
use crate::config::global::SharedConfig;
use crate::planes::publisher::{Counts, ListPlanes, Publisher};
use crate::session::Sessions;

/// What `/debug/counts`, `/metrics` and the API read.
#[derive(Clone)]
pub struct Counted {
    pub sessions: Arc<Sessions>,
    pub config: SharedConfig,
    pub publisher: Addr<Publisher>,
    pub api: crate::observe::dashboard::Api,
}

impl Counted {
    /// Tokio tasks alive on this runtime and on every session arbiter's.
    async fn tasks(&self) -> usize {
        let mut tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        for arbiter in self.sessions.directory.arbiters() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let asked = arbiter.spawn(async move {
                let alive = tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks();
                let _ = tx.send(alive);
            });
            if asked {
                tasks += rx.await.unwrap_or(0);
            }
        }
        tasks
    }

    /// The Prometheus text exposition.
    async fn metrics(&self) -> String {
        let planes = self
            .publisher
            .send(ListPlanes)
            .await
            .map(|r| r.data_planes)
            .unwrap_or_default();
        let version = self.config.read().version();
        let sessions = self.sessions.directory.len();
        self.sessions.env.metrics.scrape(sessions, version, &planes)
    }

    async fn json(&self) -> Value {
        let (sessions, instances) = self.sessions.directory.counts();
        let mut counts = json!({
            "sessions": sessions,
            "instances": instances,
            "tasks": self.tasks().await,
        });
        let subscriptions = self
            .sessions
            .env
            .committer
            .send(SubscriberCount)
            .await
            .unwrap_or(0);
        counts["subscriptions"] = json!(subscriptions);
        let publisher = self.publisher.send(Counts).await.unwrap_or_default();
        let parts = [
            self.config.read().counts(),
            self.sessions.env.telemetry.counts(),
            publisher,
        ];
        for part in parts {
            if let (Value::Object(all), Value::Object(more)) = (&mut counts, part) {
                all.extend(more);
            }
        }
        counts
    }
}

pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>, counted: Counted) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (ready, counted) = (ready.clone(), counted.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), answer(stream, ready, counted)).await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    ready: Arc<AtomicBool>,
    counted: Counted,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "GET" {
        if let Some(view) = counted.api.get(path).await {
            return write(&mut stream, "200 OK", "application/json", &view.to_string()).await;
        }
        if path == "/" {
            let page = crate::observe::dashboard::PAGE;
            return write(&mut stream, "200 OK", "text/html; charset=utf-8", page).await;
        }
    }
    let (status, body) = match (method, path) {
        ("GET", "/healthz") => ("200 OK", "ok\n".to_string()),
        ("GET", "/ready") if ready.load(Ordering::Acquire) => ("200 OK", "ready\n".to_string()),
        ("GET", "/ready") => ("503 Service Unavailable", "starting\n".to_string()),
        ("GET", "/debug/counts") => ("200 OK", format!("{}\n", counted.json().await)),
        ("GET", "/metrics") => ("200 OK", counted.metrics().await),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let content_type = match path {
        "/metrics" => portico_proto::metrics::content_type(),
        _ => "text/plain".to_string(),
    };
    write(&mut stream, status, &content_type, &body).await
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
