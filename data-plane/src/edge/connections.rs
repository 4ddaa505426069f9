//! Client connections: each one waits for its next request in a small future
//! of its own, so an idle keep-alive connection holds a few KB rather than
//! Pingora's whole per-request state, then hands the request's first bytes to
//! the forwarder; and the limits on them (how many, how long a request head
//! may take, how long one may idle).

use std::cell::Cell;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::v1::server::HttpSession as ServerSessionV1;
use pingora::protocols::http::ServerSession;
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
    /// `--listen-proxy-protocol`: connections to this address begin with a
    /// PROXY protocol header, which names their client.
    pub proxy_protocol: Option<std::net::SocketAddr>,
}

/// An HTTP app that also serves an HTTP/1 request whose head came whole in
/// the connection's first bytes (the forwarder's fast path).
#[async_trait]
pub trait ServeHttp1: HttpServerApp + Send + Sync + 'static {
    /// What a client connection keeps between its requests.
    type Conn: Default + Send;

    /// How much longer `conn` may keep what it holds while the client is
    /// idle (`None`: it holds nothing); then `release` gives it up.
    fn hold_for(conn: &Self::Conn) -> Option<Duration>;

    fn release(conn: &mut Self::Conn);

    /// `rest`: what followed the head in those bytes.
    async fn serve_h1(
        self: &Arc<Self>,
        session: ServerSession,
        rest: Bytes,
        conn: &mut Self::Conn,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream>;
}

/// Serves the client connections of one listener with `A` (the forwarder).
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
impl<A: ServeHttp1> ServerApp for ClientConnections<A> {
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
        // What came after a PROXY protocol header: the first request's start.
        let mut prefix = None;
        if self.limits.proxy_protocol.is_some() && self.limits.proxy_protocol == local_inet(&stream)
        {
            prefix = Some(proxy_header(&mut stream, self.limits.header).await?);
        }
        let keepalive_secs = self.limits.keepalive.as_secs().max(1);
        let mut settings = None;
        let mut first = true;
        // Until its first request is done, a stop waits for this connection
        // (accepted an instant before the listener closed, its request may
        // still be on the way) rather than dropping it with a reset.
        let mut awaited = Some(self.lifecycle.await_first());
        let accepted = Instant::now();
        let mut conn = A::Conn::default();
        loop {
            let idle_limit = if first {
                self.limits.header
            } else {
                self.limits.keepalive
            };
            // What the connection holds between requests is let go once
            // its time is up, and the wait goes on.
            let hold = A::hold_for(&conn).filter(|hold| *hold < idle_limit);
            let waited = match prefix.take().filter(|p: &BytesMut| !p.is_empty()) {
                Some(bytes) => Waited::Bytes(stream, bytes),
                None => next_request(stream, hold.unwrap_or(idle_limit), shutdown, first).await,
            };
            let waited = match (waited, hold) {
                (Waited::Idle(stream), Some(held)) => {
                    A::release(&mut conn);
                    next_request(stream, idle_limit - held, shutdown, first).await
                }
                (waited, _) => waited,
            };
            let Waited::Bytes(next, bytes) = waited else {
                return None;
            };
            let end = head_end(&bytes);
            // What came after the head (a body's start), kept for a replay.
            let rest = match end {
                Some(end) if end < bytes.len() => Bytes::copy_from_slice(&bytes[end..]),
                _ => Bytes::new(),
            };
            let mut h1 = ServerSessionV1::new(next);
            // The parser starts from the bytes read: no second read.
            h1.set_pipelined_prefix(bytes);
            let mut session = ServerSession::H1(h1);
            // (Pingora turns keep-alive off itself once the listener closes.)
            match settings.take() {
                Some(settings) => {
                    pingora::apps::HttpPersistentSettings::apply_to_session(settings, &mut session)
                }
                None => session.set_keepalive(Some(keepalive_secs)),
            }
            // On a new connection the head deadline counts from accept.
            let head_limit = if first {
                self.limits.header.saturating_sub(accepted.elapsed())
            } else {
                self.limits.header
            };
            first = false;
            // A head that came whole in the first read needs no deadline
            // (the usual case, which then costs no timer), and is the one
            // the fast path can take.
            // (Both futures are boxed: the request's state is allocated
            // while it runs, not kept in this future through idle waits.)
            let reused = if end.is_some() {
                self.proxy
                    .serve_h1(session, rest, &mut conn, shutdown)
                    .await?
            } else {
                let request = self.proxy.process_new_http(session, shutdown);
                // Boxed too: a rare state, kept out of the idle future's size.
                Box::pin(within_head_deadline(head_limit, request)).await??
            };
            awaited.take();
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// The address a connection was accepted on.
fn local_inet(stream: &Stream) -> Option<std::net::SocketAddr> {
    let digest = stream.get_socket_digest()?;
    digest.local_addr()?.as_inet().copied()
}

/// Reads the PROXY protocol header a connection begins with, within
/// `limit`, and makes the client it names the connection's peer; what
/// followed it in the same reads. `None` (the connection is closed) when
/// the header is missing, malformed or late.
async fn proxy_header(stream: &mut Stream, limit: Duration) -> Option<BytesMut> {
    use super::proxy_protocol::{parse, Header};
    use tokio::io::AsyncReadExt;
    let mut buf = BytesMut::with_capacity(256);
    let read = async {
        loop {
            match parse(&buf) {
                Header::Partial => {}
                Header::Whole { len, source } => return Some((len, source)),
                Header::Invalid => return None,
            }
            // A v2 header may carry TLVs, but never more than 64 KiB.
            if buf.len() > 65_551 || stream.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    };
    let Ok(Some((len, source))) = tokio::time::timeout(limit, read).await else {
        warn!("a connection to the PROXY protocol listener sent no valid header; closed");
        return None;
    };
    if let Some(source) = source {
        let digest = pingora::protocols::SocketDigest::from_raw_fd(stream.id());
        let _ = digest
            .peer_addr
            .set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(
                source,
            )));
        stream.set_socket_digest(digest);
    }
    Some(buf.split_off(len))
}

/// How the wait for a request ended.
enum Waited {
    /// The client sent these first bytes.
    Bytes(Stream, BytesMut),
    /// Nothing came within the limit.
    Idle(Stream),
    /// Closed, failed, or stopping.
    Gone,
}

/// Waits until the client sends its next request, in a future that holds
/// no buffer; with the bytes that came first. A new connection's `first`
/// request is read even when stopping: it was accepted while the listener
/// was open (perhaps an instant before it closed), so its client is owed an
/// answer (sent with `Connection: close`).
async fn next_request(
    mut stream: Stream,
    limit: Duration,
    shutdown: &ShutdownWatch,
    first: bool,
) -> Waited {
    if !first && *shutdown.borrow() {
        return Waited::Gone;
    }
    let mut shutdown = shutdown.clone();
    let stopping = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    let read = tokio::time::timeout(limit, FirstBytes(&mut stream));
    let read = if first {
        read.await
    } else {
        tokio::select! {
            biased;
            read = read => read,
            _ = stopping => return Waited::Gone,
        }
    };
    match read {
        Ok(Some(bytes)) => Waited::Bytes(stream, bytes),
        Ok(None) => Waited::Gone,
        Err(_) => Waited::Idle(stream),
    }
}

/// Where the request head in `bytes` ends (after its empty line), if it
/// is whole. HTTP/1 also allows bare LF line ends.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(bytes, b"\n\r\n").map(|i| i + 3);
    let lf = memchr::memmem::find(bytes, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resolves once the client sent bytes, with them: they are read into a
/// buffer on the stack of one poll (so the idle future holds none) and
/// copied out at their size. `None` on close or error.
struct FirstBytes<'a>(&'a mut Stream);

impl Future for FirstBytes<'_> {
    type Output = Option<BytesMut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BytesMut>> {
        // Uninitialised: zeroing 4 KiB per request is measurable.
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut read = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut *self.0).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                Poll::Ready(Some(BytesMut::from(read.filled())))
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

    #[test]
    fn a_head_ends_after_its_empty_line_with_crlf_or_bare_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b""), None);
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
