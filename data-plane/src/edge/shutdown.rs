//! Stopping and upgrading without dropping a request: on SIGTERM (or SIGINT)
//! `/ready` turns 503, the proxy listener keeps accepting for the delay, then
//! closes, and requests in flight get the grace to finish; on SIGQUIT the
//! listening sockets go to a new process (`--upgrade`) and this one drains.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::{ListenFds, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::live::Live;

/// After a hand-off, the old process keeps accepting beside the new one this
/// long (or the shutdown delay, if longer), answering with `Connection:
/// close`: busy keep-alive clients move to the new process between two
/// requests instead of having their connection closed under a request.
const HAND_OFF_OVERLAP: Duration = Duration::from_secs(2);
/// After the listener closes, requests are done once nothing new was
/// counted for this long (`Lifecycle::settled`): a connection accepted just
/// before the close is a task not yet run (seen in CI: 1 request in 1,000
/// of an upgrade under load closed unanswered).
const ACCEPTED_GAP: Duration = Duration::from_millis(200);

/// How a stop unfolds.
#[derive(Debug, Clone)]
pub struct StopPolicy {
    /// The proxy listener keeps accepting this long after SIGTERM, while load
    /// balancers notice `/ready` is 503.
    pub delay: Duration,
    /// Requests in flight may finish within this; then they are cut.
    pub grace: Duration,
    /// Where a new process started with `--upgrade` waits for the sockets.
    pub upgrade_sock: String,
}

/// Pingora's signal watch, replaced: it runs the whole stop before telling
/// Pingora to end, because Pingora's own graceful stop waits a fixed time
/// rather than for the requests.
pub struct Stopper {
    live: Arc<Live>,
    policy: StopPolicy,
    proxy: watch::Sender<bool>,
    admin: watch::Sender<bool>,
    fds: Arc<Mutex<Option<ListenFds>>>,
}

impl Stopper {
    pub fn new(live: Arc<Live>, policy: StopPolicy) -> Self {
        Stopper {
            live,
            policy,
            proxy: watch::channel(false).0,
            admin: watch::channel(false).0,
            fds: Arc::default(),
        }
    }

    /// Wraps the proxy service: its listener closes when the stop says so.
    pub fn proxy<S: ServiceWithDependents>(&self, service: S) -> Closable<S> {
        self.closable(service, &self.proxy)
    }

    /// Wraps the admin service: it keeps answering (503 on `/ready`) until
    /// the process ends, except after a hand-off, when the new one answers.
    pub fn admin<S: ServiceWithDependents>(&self, service: S) -> Closable<S> {
        self.closable(service, &self.admin)
    }

    fn closable<S>(&self, inner: S, close: &watch::Sender<bool>) -> Closable<S> {
        Closable {
            inner,
            close: close.subscribe(),
            fds: self.fds.clone(),
        }
    }

    async fn run(&self) -> std::io::Result<ShutdownSignal> {
        let mut signals = Signals::new()?;
        crate::edge::systemd::notify_ready();
        let reason = loop {
            match signals.next().await {
                Kind::Terminate => break "terminate",
                Kind::Interrupt => break "interrupt",
                Kind::Upgrade if self.hand_off().await => break "upgrade",
                Kind::Upgrade => {}
            }
        };
        let lifecycle = &self.live.lifecycle;
        lifecycle.stop(reason);
        self.live.registry.outbound.send_stopping(reason);
        let upgrade = reason == "upgrade";
        let delay = if upgrade {
            self.policy.delay.max(HAND_OFF_OVERLAP)
        } else {
            self.policy.delay
        };
        if upgrade {
            let _ = self.admin.send(true);
        }
        info!(reason, ?delay, grace = ?self.policy.grace, in_flight = lifecycle.in_flight(), "stopping: /ready answers 503; the proxy listener closes after the delay, then requests in flight may finish within the grace");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = signals.again() => return Ok(at_once()),
        }
        let _ = self.proxy.send(true);
        info!(
            in_flight = lifecycle.in_flight(),
            "proxy listener closed; waiting for requests in flight"
        );
        tokio::select! {
            finished = tokio::time::timeout(self.policy.grace, lifecycle.settled(ACCEPTED_GAP)) => match finished {
                Ok(()) => info!("every request finished"),
                Err(_) => warn!(in_flight = lifecycle.in_flight(), grace = ?self.policy.grace, "shutdown grace over; cutting the requests still in flight"),
            },
            _ = signals.again() => return Ok(at_once()),
        }
        info!("portico-dp stopped");
        Ok(ShutdownSignal::GracefulTerminate)
    }

    /// Sends the listening sockets to the process waiting on the upgrade
    /// socket; on failure this one keeps serving.
    async fn hand_off(&self) -> bool {
        let Some(fds) = self.fds.lock().clone() else {
            warn!("SIGQUIT before the listeners are up; still serving");
            return false;
        };
        let path = self.policy.upgrade_sock.clone();
        info!(upgrade_sock = %path, "SIGQUIT: handing the listening sockets to the new process");
        // Blocking: it retries for a few seconds while the new process starts.
        let sent =
            tokio::task::spawn_blocking(move || fds.lock().send_to_sock(path.as_str())).await;
        match sent {
            Ok(Ok(_)) => {
                info!("listening sockets handed off");
                true
            }
            Ok(Err(e)) => {
                error!(error = %e, upgrade_sock = %self.policy.upgrade_sock, "cannot hand off the listening sockets (is a new portico-dp --upgrade waiting on this socket?); still serving");
                false
            }
            Err(e) => {
                error!(error = %e, "the hand-off task failed; still serving");
                false
            }
        }
    }
}

fn at_once() -> ShutdownSignal {
    warn!("second signal: stopping at once");
    ShutdownSignal::FastShutdown
}

#[async_trait]
impl ShutdownSignalWatch for Stopper {
    async fn recv(&self) -> ShutdownSignal {
        match self.run().await {
            Ok(how) => how,
            Err(e) => {
                error!(error = %e, "cannot watch signals; stopping");
                ShutdownSignal::FastShutdown
            }
        }
    }
}

enum Kind {
    Terminate,
    Interrupt,
    Upgrade,
}

struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    async fn next(&mut self) -> Kind {
        tokio::select! {
            _ = self.term.recv() => Kind::Terminate,
            _ = self.int.recv() => Kind::Interrupt,
            _ = self.quit.recv() => Kind::Upgrade,
        }
    }

    /// A second SIGTERM or SIGINT while stopping; SIGQUIT is ignored then.
    async fn again(&mut self) {
        loop {
            match self.next().await {
                Kind::Terminate | Kind::Interrupt => return,
                Kind::Upgrade => warn!("SIGQUIT while stopping: ignored"),
            }
        }
    }
}

/// A Pingora service whose listeners close on the stopper's word (or on
/// Pingora's own shutdown at the very end), not only on Pingora's.
pub struct Closable<S> {
    inner: S,
    close: watch::Receiver<bool>,
    /// Where the listening sockets are kept, for a hand-off.
    fds: Arc<Mutex<Option<ListenFds>>>,
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Closable<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        if let Some(fds) = &fds {
            *self.fds.lock() = Some(fds.clone());
        }
        let mut close = self.close.clone();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = close.wait_for(|c| *c) => {}
                _ = shutdown.wait_for(|c| *c) => {}
            }
            let _ = tx.send(true);
            // Kept until the listeners are gone: a dropped sender reads as an error.
            tx.closed().await;
        });
        self.inner
            .start_service(fds, rx, listeners_per_fd, ready)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
