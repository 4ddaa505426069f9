//! Client connections: each one waits for its next request in a small future
//! of its own, so an idle keep-alive connection holds a few KB rather than
//! Pingora's whole per-request state; and the limits on them (how many, how
//! long a request head may take, how long one may idle).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tracing::warn;

use crate::proxy::Proxy;

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// An idle keep-alive connection is closed after this.
    pub keepalive: Duration,
    /// A request head must arrive whole within this (from accept, or from
    /// its first byte on a kept-alive connection): slow-loris protection.
    pub header: Duration,
    /// Connections beyond this are closed at accept.
    pub max: usize,
}

pub struct ClientConnections {
    proxy: Arc<HttpProxy<Proxy>>,
    limits: ConnLimits,
    counts: Arc<ConnCounts>,
    started: Instant,
}

/// Client connections open now and refused since start, shared with the
/// admin listener.
#[derive(Default)]
pub struct ConnCounts {
    open: AtomicUsize,
    refused: AtomicU64,
    /// When a refusal was last logged (ms since start): once a second at most.
    refusal_logged: AtomicU64,
}

impl ConnCounts {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }
}

tokio::task_local! {
    /// Set by the proxy once a request head is read: the head deadline no
    /// longer applies to the request that follows.
    static HEAD_READ: Cell<bool>;
}

/// Called by the proxy when a request head was read on this connection.
pub fn head_read() {
    let _ = HEAD_READ.try_with(|read| read.set(true));
}

/// Counts one open connection until dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientConnections {
    pub fn new(proxy: HttpProxy<Proxy>, limits: ConnLimits, counts: Arc<ConnCounts>) -> Self {
        ClientConnections {
            proxy: Arc::new(proxy),
            limits,
            counts,
            started: Instant::now(),
        }
    }

    fn admit(&self) -> Option<Slot<'_>> {
        let counts = &*self.counts;
        let open = counts.open.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Slot(&counts.open);
        if open <= self.limits.max {
            return Some(slot);
        }
        let refused = counts.refused.fetch_add(1, Ordering::AcqRel) + 1;
        let now = self.started.elapsed().as_millis() as u64;
        let last = counts.refusal_logged.load(Ordering::Acquire);
        let due = last == 0 || now.saturating_sub(last) >= 1000;
        if due
            && counts
                .refusal_logged
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            warn!(
                max = self.limits.max,
                refused_total = refused,
                "too many client connections; closing new ones at accept (--max-client-connections)"
            );
        }
        None
    }
}

#[async_trait]
impl ServerApp for ClientConnections {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _slot = self.admit()?;
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 multiplexes its own streams; Pingora runs it.
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let keepalive_secs = self.limits.keepalive.as_secs().max(1);
        let mut settings = None;
        let mut first = true;
        loop {
            let waited = Instant::now();
            let idle_limit = if first {
                self.limits.header
            } else {
                self.limits.keepalive
            };
            if !next_byte(&mut stream, idle_limit, shutdown).await {
                return None;
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => {
                    pingora::apps::HttpPersistentSettings::apply_to_session(settings, &mut session)
                }
                None if *shutdown.borrow() => session.set_keepalive(None),
                None => session.set_keepalive(Some(keepalive_secs)),
            }
            // On a new connection the head deadline counts from accept.
            let head_limit = if first {
                self.limits.header.saturating_sub(waited.elapsed())
            } else {
                self.limits.header
            };
            first = false;
            let reused =
                within_head_deadline(head_limit, self.proxy.process_new_http(session, shutdown))
                    .await??;
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// Waits, in a future of a few bytes, until the client sends the first byte
/// of its next request; false on timeout, close, error or shutdown.
async fn next_byte(stream: &mut Stream, limit: Duration, shutdown: &ShutdownWatch) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut shutdown = shutdown.clone();
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(limit, stream.try_peek(&mut byte)) => {
            matches!(peeked, Ok(Ok(true)))
        }
        _ = shutdown.wait_for(|stopping| *stopping) => false,
    }
}

/// Runs one request's processing; gives up (None) if its head has not been
/// read when `limit` passes.
async fn within_head_deadline<F: Future>(limit: Duration, request: F) -> Option<F::Output> {
    HEAD_READ
        .scope(Cell::new(false), async move {
            tokio::pin!(request);
            tokio::select! {
                done = &mut request => return Some(done),
                _ = tokio::time::sleep(limit) => {}
            }
            if HEAD_READ.with(Cell::get) {
                Some(request.await)
            } else {
                None
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_head_read_in_time_lifts_the_deadline() {
        let slow_body = async {
            head_read();
            tokio::time::sleep(Duration::from_secs(60)).await;
            "answered"
        };
        assert_eq!(
            within_head_deadline(Duration::from_secs(10), slow_body).await,
            Some("answered")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_not_read_in_time_is_given_up() {
        let slow_head = async {
            tokio::time::sleep(Duration::from_secs(11)).await;
            head_read();
            "answered"
        };
        assert_eq!(
            within_head_deadline(Duration::from_secs(10), slow_head).await,
            None
        );
    }
}
