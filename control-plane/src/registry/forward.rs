//! Commands for sessions another replica runs, relayed there (docs/HA.md):
//! one gRPC stream per client connection and replica, so the session's
//! actor sees them in the connection's order and its events come back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use portico_proto::v1::{self, relay_down::Kind};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::planes::peers::Peers;
use crate::protocol::Reply;
use crate::registry::outcome::{run_here, FollowUp, Outcome, Pending};
use crate::session::{Exec, Sessions};

/// Names the replica a relay is meant for.
pub const REPLICA_HEADER: &str = "portico-replica";

/// Relays of one command before giving up on a session that keeps moving.
const MAX_HOPS: usize = 5;
/// A pause before looking again for a session that moved, so a move in
/// progress (a take-over between its store write and its actor) settles.
const MOVING: std::time::Duration = std::time::Duration::from_millis(20);

/// A relayed command's reply, as the replica running the session gave it.
pub struct Relayed {
    pub line: String,
    pub close: bool,
    /// The second line (MAINT_OK) that follows.
    pub follow_up: Option<oneshot::Receiver<String>>,
    /// That replica does not run the session (it moved): nothing ran.
    pub not_here: bool,
}

/// Why a relayed command got no reply: the link to its replica failed.
pub type RelayFailed = String;

type Waiter = oneshot::Sender<Result<Relayed, RelayFailed>>;

/// One stream to one replica.
struct Link {
    up: mpsc::UnboundedSender<v1::RelayUp>,
    waiting: Arc<Mutex<Waiting>>,
}

/// The commands sent on a link and not answered, oldest first.
#[derive(Default)]
struct Waiting {
    commands: VecDeque<Waiter>,
    /// The stream ended: nothing more is sent on this link.
    ended: bool,
}

/// A client connection's links to the replicas running its sessions.
pub struct Forwarder {
    peers: Arc<Peers>,
    /// Where the sessions' events for this connection go.
    events: mpsc::UnboundedSender<String>,
    links: Mutex<HashMap<String, Link>>,
}

impl Forwarder {
    pub fn new(peers: Arc<Peers>, events: mpsc::UnboundedSender<String>) -> Forwarder {
        Forwarder {
            peers,
            events,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `line` to replica `replica` now, so commands keep their
    /// order; resolves to its reply.
    pub fn send(
        &self,
        replica: &str,
        line: String,
    ) -> oneshot::Receiver<Result<Relayed, RelayFailed>> {
        let (tx, rx) = oneshot::channel();
        let mut links = self.links.lock();
        let mut message = v1::RelayUp { line };
        for _ in 0..2 {
            let link = links
                .entry(replica.to_string())
                .or_insert_with(|| self.link(replica));
            let mut waiting = link.waiting.lock();
            if !waiting.ended {
                match link.up.send(message) {
                    Ok(()) => {
                        waiting.commands.push_back(tx);
                        return rx;
                    }
                    Err(mpsc::error::SendError(back)) => message = back,
                }
            }
            // The link ended (its replica failed or went): a new one.
            drop(waiting);
            links.remove(replica);
        }
        let _ = tx.send(Err("cannot open a relay".into()));
        rx
    }

    fn link(&self, replica: &str) -> Link {
        let (up, rx) = mpsc::unbounded_channel();
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let (peers, events, replica) =
            (self.peers.clone(), self.events.clone(), replica.to_string());
        let answered = waiting.clone();
        tokio::spawn(async move {
            let ended = relay(&peers, &replica, rx, &answered, &events).await;
            let reason = match ended {
                Ok(()) => "the relay closed".to_string(),
                Err(e) => e.to_string(),
            };
            let mut waiting = answered.lock();
            waiting.ended = true;
            for waiter in waiting.commands.drain(..) {
                let _ = waiter.send(Err(reason.clone()));
            }
        });
        Link { up, waiting }
    }
}

/// Runs one relay stream until it ends, handing each reply to the oldest
/// command waiting and each event to the connection.
async fn relay(
    peers: &Peers,
    replica: &str,
    up: mpsc::UnboundedReceiver<v1::RelayUp>,
    waiting: &Mutex<Waiting>,
    events: &mpsc::UnboundedSender<String>,
) -> anyhow::Result<()> {
    let grpc = peers
        .address(replica)
        .await
        .ok_or_else(|| anyhow::anyhow!("not live"))?;
    let mut client = peers.client(&grpc).await?;
    // A replica started again on the same address answers as another one.
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(up));
    request
        .metadata_mut()
        .insert(REPLICA_HEADER, replica.parse()?);
    let mut down = client.relay(request).await?.into_inner();
    let mut follow_ups: HashMap<u64, oneshot::Sender<String>> = HashMap::new();
    while let Some(message) = down.message().await? {
        match message.kind {
            Some(Kind::Event(line)) => {
                let _ = events.send(line);
            }
            Some(Kind::Reply(reply)) => {
                let follow_up = (reply.follow_up != 0).then(|| {
                    let (tx, rx) = oneshot::channel();
                    follow_ups.insert(reply.follow_up, tx);
                    rx
                });
                if let Some(waiter) = waiting.lock().commands.pop_front() {
                    let _ = waiter.send(Ok(Relayed {
                        line: reply.line,
                        close: reply.close,
                        follow_up,
                        not_here: reply.not_here,
                    }));
                }
            }
            Some(Kind::FollowUp(follow_up)) => {
                if let Some(tx) = follow_ups.remove(&follow_up.id) {
                    let _ = tx.send(follow_up.line);
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// Looks up where session `session` runs (when this replica does not) and
/// relays its command there. When that replica fails, the session is taken
/// over here (its staged changes were lost with it) and the command gets an
/// `ERROR` saying so; the next command works.
pub(crate) fn command(
    forward: &Arc<Forwarder>,
    line: String,
    session: String,
    txn: Option<String>,
    exec: Exec,
    sessions: &Arc<Sessions>,
) -> Pending {
    // Sent now when the replica is known, so pipelined commands keep their order.
    let known = sessions
        .directory
        .stored_replica(&session)
        .filter(|r| !r.is_empty() && r != sessions.replica_id());
    let sent = known.map(|replica| (forward.send(&replica, line.clone()), replica));
    let (forward, sessions) = (forward.clone(), sessions.clone());
    Box::pin(async move {
        let error = |message: String| Outcome::line(Reply::error(message).render(txn.as_deref()));
        let mut sent = sent;
        for _ in 0..MAX_HOPS {
            let (reply, replica) = match sent.take() {
                Some(sent) => sent,
                // Not known here yet (a record the watch has not brought), or moved.
                None => match sessions.stored_replica(&session).await {
                    Ok(Some(replica))
                        if !replica.is_empty() && replica != sessions.replica_id() =>
                    {
                        (forward.send(&replica, line.clone()), replica)
                    }
                    Ok(Some(_)) => return here(exec, session, txn, &sessions).await,
                    Ok(None) => {
                        return Outcome::line(Reply::invalid_session().render(txn.as_deref()))
                    }
                    Err(e) => return error(e.to_string()),
                },
            };
            match reply.await {
                Ok(Ok(relayed)) if relayed.not_here => {
                    tracing::debug!(%replica, "a relayed command's session is not there; looking again");
                    tokio::time::sleep(MOVING).await;
                    continue;
                }
                Ok(Ok(relayed)) => {
                    let follow_up = relayed
                        .follow_up
                        .map(|rx| -> FollowUp { Box::pin(async move { rx.await.ok() }) });
                    return Outcome {
                        line: relayed.line,
                        close: relayed.close,
                        follow_up,
                        ..Outcome::line(String::new())
                    };
                }
                Ok(Err(reason)) => {
                    if let Some(message) = take_over(&session, &replica, &reason, &sessions).await {
                        return error(message);
                    }
                }
                Err(_) => {
                    let reason = "the relay closed";
                    if let Some(message) = take_over(&session, &replica, reason, &sessions).await {
                        return error(message);
                    }
                }
            }
            // Taken over by another replica first: relayed there.
        }
        error("the session keeps moving between replicas; try again".to_string())
    })
}

/// A session the store says runs here (or ran on a replica now gone, with
/// an empty name): brought here if it is not, then run.
pub(crate) async fn here(
    exec: Exec,
    session: String,
    txn: Option<String>,
    sessions: &Arc<Sessions>,
) -> Outcome {
    if sessions.directory.releasing(&session) {
        let moved = crate::store::StoreFailed::Moved.to_string();
        return Outcome::line(Reply::error(moved).render(txn.as_deref()));
    }
    let addr = match sessions.directory.lookup(&session) {
        Some(addr) => Ok(Some(addr)),
        // Stored as run here: started from its record, unless it moved since.
        None => {
            let here = sessions.replica_id().to_string();
            sessions
                .claim_from(&session, Some(&here))
                .await
                .map(|(addr, _)| addr)
        }
    };
    match addr {
        Ok(Some(addr)) => {
            run_here(Ok(addr.send(exec)), session, false, txn, sessions.clone()).await
        }
        Ok(None) => Outcome::line(Reply::invalid_session().render(txn.as_deref())),
        Err(e) => Outcome::line(Reply::error(e.to_string()).render(txn.as_deref())),
    }
}

/// The replica running `session` failed under a relayed command: the
/// session is taken over here, and the message for the command's `ERROR`
/// says what was lost. `None` when it had moved on before (the command
/// goes where it runs now).
async fn take_over(
    session: &str,
    replica: &str,
    reason: &str,
    sessions: &Sessions,
) -> Option<String> {
    tracing::warn!(%replica, reason, "a relayed command failed; taking its session over");
    let outcome = match sessions.claim_from(session, Some(replica)).await {
        Ok((Some(_), _)) => format!("the session moved to replica {}", sessions.replica_id()),
        // Let go, then taken by another replica first: what was staged is gone all the same.
        Ok((None, true)) => "the session runs on another replica now".to_string(),
        Ok((None, false)) => return None,
        Err(e) => format!("the session could not be taken over ({e})"),
    };
    Some(format!(
        "replica {replica} failed while running the command ({reason}); it may not have run, \
         and staged changes there are lost; {outcome}"
    ))
}
