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
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (ready, counted) = (ready.clone(), counted.clone());
        tokio::spawn(async move {
            let Ok(Ok((method, path))) =
                tokio::time::timeout(ANSWER_WITHIN, head(&mut stream)).await
            else {
                return;
            };
            if (method.as_str(), path.as_str()) == ("GET", STREAM) {
                let _ = stream_ticks(stream, counted).await;
                return;
            }
            let answered = answer(stream, &method, &path, ready, counted);
            let _ = tokio::time::timeout(ANSWER_WITHIN, answered).await;
        });
    }
}

/// Every request but the stream is read and answered within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// The dashboard's live updates, as server-sent events.
const STREAM: &str = "/api/v1/stream";
/// How often the stream sends a tick.
const TICK: Duration = Duration::from_secs(2);
/// Streams open at once; more are answered 503 (each holds a connection
/// and costs a tick's work every 2 s).
const MAX_STREAMS: usize = 64;
static STREAMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The method and path of a request head.
async fn head(stream: &mut TcpStream) -> std::io::Result<(String, String)> {
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
    let method = parts.next().unwrap_or("").to_string();
    // The query is the page's own (`?ticks=N`); no route reads it.
    let target = parts.next().unwrap_or("");
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok((method, path.to_string()))
}

/// `text/event-stream`: a `tick` event at once and every [`TICK`] until the
/// client goes.
async fn stream_ticks(mut stream: TcpStream, counted: Counted) -> std::io::Result<()> {
    if STREAMS.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        STREAMS.fetch_sub(1, Ordering::AcqRel);
        return write(
            &mut stream,
            "503 Service Unavailable",
            "text/plain",
            "too many streams\n",
        )
        .await;
    }
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            STREAMS.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _open = Open;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\nconnection: close\r\n\r\n")
        .await?;
    let mut every = tokio::time::interval(TICK);
    loop {
        every.tick().await;
        let tick = counted.api.tick().await;
        stream
            .write_all(format!("event: tick\ndata: {tick}\n\n").as_bytes())
            .await?;
    }
}

async fn answer(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    ready: Arc<AtomicBool>,
    counted: Counted,
) -> std::io::Result<()> {
    if method == "GET" {
        if let Some(view) = counted.api.get(path).await {
            return write(&mut stream, "200 OK", "application/json", &view.to_string()).await;
        }
        use crate::observe::dashboard::{PAGE, UPLOT_CSS, UPLOT_JS};
        let asset = match path {
            "/" => Some(("text/html; charset=utf-8", PAGE)),
            "/assets/uplot.js" => Some(("text/javascript; charset=utf-8", UPLOT_JS)),
            "/assets/uplot.css" => Some(("text/css; charset=utf-8", UPLOT_CSS)),
            _ => None,
        };
        if let Some((content_type, body)) = asset {
            return write(&mut stream, "200 OK", content_type, body).await;
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
