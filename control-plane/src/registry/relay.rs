//! Commands relayed here by another replica for sessions this one runs
//! (docs/HA.md): each relay stream is served as one registry connection
//! would be, replies in command order and the sessions' events interleaved.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::StreamExt;
use portico_proto::v1::{self, relay_down::Kind};
use tokio::sync::mpsc;
use tonic::Streaming;
use tracing::debug;

use crate::protocol::framing::Frame;
use crate::registry::connection::{counted, next_conn_id, Conn};
use crate::registry::outcome::Pending;
use crate::session::{Home, HomeClosed, Sessions};

/// A follow-up line with the id the relaying replica knows it by.
type Numbered = Pin<Box<dyn Future<Output = Option<v1::RelayFollowUp>> + Send>>;

/// Serves one relay stream until either side ends it; what goes back is
/// sent on `down`.
pub async fn serve(
    mut up: Streaming<v1::RelayUp>,
    peer: SocketAddr,
    sessions: Arc<Sessions>,
    down: mpsc::Sender<Result<v1::RelayDown, tonic::Status>>,
) {
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<String>();
    let conn = Conn {
        home: Home {
            conn_id: next_conn_id(),
            events: events_tx,
        },
        peer,
        forward: None,
        guessing: None,
    };
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut follow_ups: FuturesUnordered<Numbered> = FuturesUnordered::new();
    let mut homes = Vec::new();
    let mut next_follow_up = 0u64;
    let mut reading = true;
    let send = |kind: Kind| down.send(Ok(v1::RelayDown { kind: Some(kind) }));
    loop {
        tokio::select! {
            // As on a client connection: a session hears of its own commit
            // before the reply to it.
            biased;
            Some(event) = events_rx.recv() => {
                if send(Kind::Event(event)).await.is_err() {
                    break;
                }
            }
            Some(outcome) = pending.next(), if !pending.is_empty() => {
                homes.extend(outcome.home_of);
                let follow_up = match outcome.follow_up {
                    Some(line) => {
                        next_follow_up += 1;
                        let id = next_follow_up;
                        follow_ups.push(Box::pin(async move {
                            line.await.map(|line| v1::RelayFollowUp { id, line })
                        }));
                        id
                    }
                    None => 0,
                };
                let reply = v1::RelayReply {
                    line: outcome.line,
                    close: outcome.close,
                    follow_up,
                    not_here: outcome.not_here,
                };
                if send(Kind::Reply(reply)).await.is_err() || outcome.close {
                    break;
                }
            }
            Some(follow_up) = follow_ups.next(), if !follow_ups.is_empty() => {
                if let Some(follow_up) = follow_up {
                    if send(Kind::FollowUp(follow_up)).await.is_err() {
                        break;
                    }
                }
            }
            message = up.message(), if reading => match message {
                Ok(Some(message)) => pending.push_back(counted(Frame::Line(message.line), &conn, &sessions)),
                Ok(None) | Err(_) => reading = false,
            },
        }
        if !reading && pending.is_empty() && follow_ups.is_empty() {
            break;
        }
    }
    for id in homes {
        if let Some(addr) = sessions.directory.lookup(&id) {
            addr.do_send(HomeClosed {
                conn_id: conn.home.conn_id,
            });
        }
    }
    debug!(conn_id = conn.home.conn_id, "relayed connection closed");
}
