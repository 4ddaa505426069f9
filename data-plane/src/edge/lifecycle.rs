//! Whether this data plane is stopping, and the requests it still owes:
//! `/ready`, the proxy and the link to the control plane read it; the stop
//! sequence in `shutdown` sets it and waits for the requests to finish.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Lifecycle {
    /// Why it stops, once it does.
    stopping: OnceLock<&'static str>,
    in_flight: AtomicUsize,
    /// Connections accepted whose first request has not been read yet: it
    /// is owed an answer, though no request is in flight on it.
    awaited: AtomicUsize,
    /// Connections and requests counted so far, to see whether any came
    /// during a quiet period.
    arrivals: AtomicU64,
    idle: Notify,
}

impl Lifecycle {
    /// Starts stopping; returns false if it already was.
    pub fn stop(&self, reason: &'static str) -> bool {
        self.stopping.set(reason).is_ok()
    }

    /// Why it stops, if it does.
    pub fn stopping(&self) -> Option<&'static str> {
        self.stopping.get().copied()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts one request until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone(), Owed::Request)
    }

    /// Counts a new connection until its first request is done (or it
    /// closes without one).
    pub fn await_first(self: &Arc<Self>) -> InFlight {
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        self.awaited.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone(), Owed::FirstRequest)
    }

    /// Resolves once no request is in flight and no new connection awaits
    /// its first.
    pub async fn idle(&self) {
        loop {
            // Registered before the check, so a last request ending in
            // between still wakes it.
            let notified = self.idle.notified();
            if self.in_flight() == 0 && self.awaited.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once idle for `quiet` with nothing new counted meanwhile.
    /// Pingora spawns each accepted connection as a task on the proxy's
    /// runtime: one accepted an instant before the listener closed may not
    /// have run, and so not be counted, when [`Lifecycle::idle`] looks;
    /// the quiet period gives it the time to be.
    pub async fn settled(&self, quiet: Duration) {
        loop {
            self.idle().await;
            let seen = self.arrivals.load(Ordering::Acquire);
            tokio::time::sleep(quiet).await;
            let still = self.in_flight() == 0 && self.awaited.load(Ordering::Acquire) == 0;
            if still && self.arrivals.load(Ordering::Acquire) == seen {
                return;
            }
        }
    }

    fn counter(&self, owed: Owed) -> &AtomicUsize {
        match owed {
            Owed::Request => &self.in_flight,
            Owed::FirstRequest => &self.awaited,
        }
    }
}

#[derive(Clone, Copy)]
enum Owed {
    Request,
    FirstRequest,
}

/// One request being served, or a new connection's first awaited; dropped
/// when the proxy is done with it (response sent, or connection gone).
pub struct InFlight(Arc<Lifecycle>, Owed);

impl Drop for InFlight {
    fn drop(&mut self) {
        let life = &*self.0;
        life.counter(self.1).fetch_sub(1, Ordering::AcqRel);
        if life.in_flight() == 0 && life.awaited.load(Ordering::Acquire) == 0 {
            life.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_the_last_request() {
        let life = Arc::new(Lifecycle::default());
        let (a, b) = (life.enter(), life.enter());
        assert_eq!(life.in_flight(), 2);
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one request is still in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle after the last request")
            .unwrap();
        life.idle().await;
    }

    #[tokio::test]
    async fn idle_waits_for_a_new_connections_first_request() {
        let life = Arc::new(Lifecycle::default());
        let awaited = life.await_first();
        assert_eq!(life.in_flight(), 0, "no request is in flight yet");
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the connection is owed its answer");
        let request = life.enter();
        drop(awaited);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "its request is in flight");
        drop(request);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle once the first request is done")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn settled_waits_out_a_connection_counted_during_the_quiet_period() {
        let life = Arc::new(Lifecycle::default());
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.settled(Duration::from_millis(200)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Counted late: accepted before the listener closed, polled after.
        let first = life.await_first();
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "quiet again for only 150 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(waiter.is_finished(), "settled 200 ms after it");
    }

    #[test]
    fn the_first_reason_stays() {
        let life = Lifecycle::default();
        assert_eq!(life.stopping(), None);
        assert!(life.stop("terminate"));
        assert!(!life.stop("upgrade"));
        assert_eq!(life.stopping(), Some("terminate"));
    }
}
