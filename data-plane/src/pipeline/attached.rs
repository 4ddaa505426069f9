//! The backend connection a client connection used last, kept with it for
//! its next request (as HAProxy keeps a server connection with its session):
//! no pool lookup and no idle-watch task per request. Only from a client's
//! second request on (a client of one request leaves it to the pool), and
//! back to the shared pool when the client connection ends, when the next
//! request goes to another backend, or after `KEPT_FOR` without one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// A kept connection waits this long for the client's next request: long
/// enough for a burst (a page's resources, a client's pipeline of calls),
/// short enough that idle clients do not hold backend connections, and
/// that a backend closing idle connections rarely does it under one.
pub const KEPT_FOR: Duration = Duration::from_millis(100);

/// Held by a client connection between its requests.
#[derive(Default)]
pub struct Attached {
    held: Option<Held>,
    /// Requests the client connection made that reached a backend.
    forwarded: u32,
}

struct Held {
    stream: Stream,
    /// The peer's `reuse_hash`.
    key: u64,
    since: Instant,
    idle_timeout: Option<Duration>,
    pool: Arc<TransportConnector>,
}

impl Attached {
    /// The kept connection, if it is to the peer `key` and fresh enough;
    /// any other one goes back to the pool.
    pub fn take(&mut self, key: u64) -> Option<Stream> {
        let held = self.held.take()?;
        if held.key == key && held.since.elapsed() < KEPT_FOR {
            return Some(held.stream);
        }
        held.release();
        None
    }

    /// How much longer the kept connection may wait for the client's next
    /// request (`None`: none is kept).
    pub fn held_for(&self) -> Option<Duration> {
        let held = self.held.as_ref()?;
        Some(KEPT_FOR.saturating_sub(held.since.elapsed()))
    }

    /// Gives the kept connection back to the pool.
    pub fn release(&mut self) {
        if let Some(held) = self.held.take() {
            held.release();
        }
    }

    /// Keeps `stream` (done with its exchange) for the client's next
    /// request, unless the backend already closed it or sent more than its
    /// response. A connection kept before goes back to the pool.
    pub fn keep(
        &mut self,
        mut stream: Stream,
        key: u64,
        idle_timeout: Option<Duration>,
        pool: &Arc<TransportConnector>,
    ) {
        self.release();
        self.forwarded = self.forwarded.saturating_add(1);
        if self.forwarded < 2 {
            // The pool makes the same check as it takes the connection.
            pool.release_stream(stream, key, idle_timeout);
            return;
        }
        if !idle_and_open(&mut stream) {
            return;
        }
        self.held = Some(Held {
            stream,
            key,
            since: Instant::now(),
            idle_timeout,
            pool: pool.clone(),
        });
    }
}

impl Held {
    fn release(self) {
        self.pool
            .release_stream(self.stream, self.key, self.idle_timeout);
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether a connection whose response was read whole has nothing more to
/// read: not closed, and no bytes beyond the response (which would be taken
/// for the next response). A read that would wait says so, at no syscall
/// when the socket is known drained.
fn idle_and_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    tokio::task::unconstrained(stream.read(&mut byte))
        .now_or_never()
        .is_none()
}
