//! Client connections: each one waits for its next request in a small future
//! of its own, so an idle keep-alive connection holds a few KB rather than
//! Pingora's whole per-request state; and the limits on them (how many, how
//! long a request head may take, how long one may idle).

use std::cell::Cell;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};
use tracing::warn;

use crate::edge::lifecycle::Lifecycle;

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

/// Serves the client connections of one listener with `A` (the HTTP proxy).
pub struct ClientConnections<A> {
    proxy: Arc<A>,
    limits: ConnLimits,
    counts: Arc<ConnCounts>,
    /// A stop waits for each new connection's first request.
    lifecycle: Arc<Lifecycle>,
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
    /// The most open at once, and how many were open, when `swing` last looked.
    peak: AtomicUsize,
    last: AtomicUsize,
}

impl ConnCounts {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }

    /// How much the number of open connections moved since the previous
    /// call: how many more are open now, or how many fewer than at the peak.
    pub fn swing(&self) -> usize {
        let open = self.open();
        let grown = open.saturating_sub(self.last.swap(open, Ordering::AcqRel));
        let dropped = self.peak.swap(open, Ordering::AcqRel).saturating_sub(open);
        grown.max(dropped)
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

impl<A> ClientConnections<A> {
    pub fn new(
        proxy: A,
        limits: ConnLimits,
        counts: Arc<ConnCounts>,
        lifecycle: Arc<Lifecycle>,
    ) -> Self {
        ClientConnections {
            proxy: Arc::new(proxy),
            limits,
            counts,
            lifecycle,
            started: Instant::now(),
        }
    }

    fn admit(&self) -> Option<Slot<'_>> {
        let counts = &*self.counts;
        let open = counts.open.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Slot(&counts.open);
        counts.peak.fetch_max(open, Ordering::AcqRel);
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
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for ClientConnections<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        crate::allocator::ensure_worker_housekeeping();
        let _slot = self.admit()?;
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 multiplexes its own streams; Pingora runs it.
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let keepalive_secs = self.limits.keepalive.as_secs().max(1);
        let mut settings = None;
        let mut first = true;
        // Until its first request is done, a stop waits for this connection
        // (accepted an instant before the listener closed, its request may
        // still be on the way) rather than dropping it with a reset.
        let mut awaited = Some(self.lifecycle.await_first());
        let accepted = Instant::now();
        loop {
            let idle_limit = if first {
                self.limits.header
            } else {
                self.limits.keepalive
            };
            let tls = !stream.as_any().is::<L4Stream>();
            let (next, head_whole) = next_request(stream, idle_limit, shutdown, first).await?;
            let mut session = ServerSession::new_http1(next);
            // (Pingora turns keep-alive off itself once the listener closes.)
            match settings.take() {
                Some(settings) => {
                    pingora::apps::HttpPersistentSettings::apply_to_session(settings, &mut session)
                }
                None => session.set_keepalive(Some(keepalive_secs)),
            }
            // On a new connection the head deadline counts from accept. A
            // TLS connection is not waited on apart (see `next_request`), so
            // its deadline also covers the keep-alive wait.
            let head_limit = if first {
                self.limits.header.saturating_sub(accepted.elapsed())
            } else if tls {
                self.limits.keepalive + self.limits.header
            } else {
                self.limits.header
            };
            first = false;
            let request = self.proxy.process_new_http(session, shutdown);
            // A head that came whole in the first read needs no deadline
            // (the usual case, which then costs no timer).
            let reused = if head_whole {
                request.await?
            } else {
                within_head_deadline(head_limit, request).await??
            };
            awaited.take();
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// Waits until the client sends its next request, in a future that holds
/// no buffer; with whether its whole head came in the first read. `None` on
/// timeout, close or error, and on shutdown for a kept-alive connection.
/// A new connection's `first` request is read even when stopping: it was
/// accepted while the listener was open (perhaps an instant before it
/// closed), so its client is owed an answer (sent with `Connection: close`).
async fn next_request(
    stream: Stream,
    limit: Duration,
    shutdown: &ShutdownWatch,
    first: bool,
) -> Option<(Stream, bool)> {
    if !first && *shutdown.borrow() {
        return None;
    }
    let mut shutdown = shutdown.clone();
    let stopping = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    if !stream.as_any().is::<L4Stream>() {
        // TLS: bytes cannot be put back under the decryption, so the
        // request is read at once, within the caller's deadline.
        return Some((stream, false));
    }
    let mut tcp: Box<L4Stream> = stream.into_any().downcast().ok()?;
    let read = tokio::time::timeout(limit, FirstBytes(&mut tcp));
    let head_whole = if first {
        read.await.ok()??
    } else {
        tokio::select! {
            biased;
            read = read => read.ok()??,
            _ = stopping => return None,
        }
    };
    Some((tcp as Stream, head_whole))
}

/// Resolves once the client sent bytes: they are read into a buffer on the
/// stack of one poll (so the idle future holds none) and put back into the
/// stream, where Pingora's parser reads them as if it had read them itself:
/// no extra read per request. Resolves to whether they hold a whole request
/// head; `None` on close or error.
struct FirstBytes<'a>(&'a mut L4Stream);

impl Future for FirstBytes<'_> {
    type Output = Option<bool>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<bool>> {
        // Uninitialised: zeroing 4 KiB per request is measurable.
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut read = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut *self.0).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                let filled = read.filled();
                let whole = filled.windows(4).any(|w| w == b"\r\n\r\n");
                self.0.rewind(filled);
                Poll::Ready(Some(whole))
            }
            Poll::Ready(_) => Poll::Ready(None),
        }
    }
}

/// Runs one request's processing; gives up (None) if its head has not been
/// read when `limit` passes.
async fn within_head_deadline<F: Future>(limit: Duration, request: F) -> Option<F::Output> {
    HEAD_READ
        .scope(Cell::new(false), async move {
            tokio::pin!(request);
            tokio::select! {
                biased;
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

    // The deadline runs on Pingora's timer (real time), so the durations are short.
    #[tokio::test]
    async fn a_head_read_in_time_lifts_the_deadline() {
        let slow_body = async {
            head_read();
            tokio::time::sleep(Duration::from_millis(300)).await;
            "answered"
        };
        assert_eq!(
            within_head_deadline(Duration::from_millis(20), slow_body).await,
            Some("answered")
        );
    }

    #[tokio::test]
    async fn a_head_not_read_in_time_is_given_up() {
        let never = std::future::pending::<()>();
        assert_eq!(
            within_head_deadline(Duration::from_millis(20), never).await,
            None
        );
    }
}
