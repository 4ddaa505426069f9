//! The registry listener: one task per TCP connection that frames lines,
//! parses them, hands each to its session's actor and writes the replies in
//! command order, with events interleaved as whole lines.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use crate::protocol::framing::{Frame, LineFramer, MAX_LINE};
use crate::protocol::{parse, Command, Reply, ReplyCode};
use crate::session::{Directory, Exec, Home, HomeClosed, Identity, Shared};
use crate::store::StoreFailed;

/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Commands read ahead of their replies on one connection.
const MAX_IN_FLIGHT: usize = 1024;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// What one command produced: its line, and what it means for the connection.
struct Outcome {
    line: String,
    close: bool,
    /// This connection became the home of the session.
    home_of: Option<String>,
    /// A second line that follows later (MAINT_OK), with the txn to echo.
    follow_up: Option<(oneshot::Receiver<Reply>, Option<String>)>,
}

type FollowUp = Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

type Pending = Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "registry accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let _ = stream.set_nodelay(true);
        // Connections run on the session arbiters so their work spreads over cores.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "registry connection hand-off failed");
                continue;
            }
        };
        let shared = shared.clone();
        shared.directory.arbiter().spawn(async move {
            match TcpStream::from_std(std_stream) {
                Ok(stream) => serve_connection(stream, peer, shared).await,
                Err(e) => warn!(error = %e, "registry connection hand-off failed"),
            }
        });
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    debug!(conn_id, %peer, "registry connection opened");
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, LineFramer::default());
    let mut out = BufWriter::new(write);
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<String>();
    let home = Home {
        conn_id,
        events: events_tx,
    };
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut follow_ups: FuturesUnordered<FollowUp> = FuturesUnordered::new();
    let mut homes: HashSet<String> = HashSet::new();
    let mut reading = true;
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);

    'conn: loop {
        tokio::select! {
            // Events and follow-ups already queued go out before replies that
            // complete at the same moment, so a session hears of its own
            // commit before the reply to it.
            biased;
            Some(event) = events_rx.recv() => {
                if write_line(&mut out, &event).await.is_err() || out.flush().await.is_err() {
                    break 'conn;
                }
            },
            Some(first) = pending.next(), if !pending.is_empty() => {
                // Write every reply that is already done, then flush once.
                let mut next = Some(first);
                while let Some(outcome) = next.take() {
                    if write_line(&mut out, &outcome.line).await.is_err() {
                        break 'conn;
                    }
                    if let Some(id) = outcome.home_of {
                        homes.insert(id);
                    }
                    if let Some((rx, txn)) = outcome.follow_up {
                        follow_ups.push(Box::pin(async move {
                            rx.await.ok().map(|reply| reply.render(txn.as_deref()))
                        }));
                    }
                    if outcome.close {
                        let _ = out.flush().await;
                        break 'conn;
                    }
                    next = pending.next().now_or_never().flatten();
                }
                if out.flush().await.is_err() {
                    break 'conn;
                }
            },
            Some(line) = follow_ups.next(), if !follow_ups.is_empty() => {
                if let Some(line) = line {
                    if write_line(&mut out, &line).await.is_err() || out.flush().await.is_err() {
                        break 'conn;
                    }
                }
            },
            frame = frames.next(), if reading && pending.len() < MAX_IN_FLIGHT => match frame {
                Some(Ok(frame)) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    pending.push_back(handle_frame(frame, peer, &home, &shared));
                }
                Some(Err(e)) => {
                    debug!(conn_id, error = %e, "registry read failed");
                    reading = false;
                }
                None => reading = false,
            },
            _ = &mut idle => {
                debug!(conn_id, "registry connection idle; closing");
                break 'conn;
            }
        }
        // A client that half-closed after MAINT_ENTER still gets its MAINT_OK.
        if !reading && pending.is_empty() && follow_ups.is_empty() {
            break;
        }
    }
    for id in homes {
        if let Some(addr) = shared.directory.lookup(&id) {
            addr.do_send(HomeClosed { conn_id });
        }
    }
    debug!(conn_id, "registry connection closed");
}

async fn write_line<W: AsyncWriteExt + Unpin>(out: &mut W, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).await
}

fn immediate(line: String) -> Pending {
    Box::pin(std::future::ready(Outcome {
        line,
        close: false,
        home_of: None,
        follow_up: None,
    }))
}

fn handle_frame(frame: Frame, peer: SocketAddr, home: &Home, shared: &Arc<Shared>) -> Pending {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong => {
            return immediate(
                Reply::error(format!("line too long (max {MAX_LINE} bytes)")).render(None),
            )
        }
        Frame::InvalidUtf8 => return immediate(Reply::error("invalid utf-8").render(None)),
    };
    let request = match parse(&line) {
        Ok(request) => request,
        Err(e) => return immediate(Reply::error(e.message).render(e.txn.as_deref())),
    };
    let txn = request.txn;
    if let Command::Register {
        service,
        instance,
        maintenance_port,
        metadata,
    } = request.command
    {
        let identity = Identity {
            id: String::new(),
            service,
            instance,
            maintenance_port,
            metadata,
            peer_ip: Some(peer.ip()),
            connected_at: SystemTime::now(),
        };
        let (shared, home) = (shared.clone(), home.clone());
        return Box::pin(async move {
            let Some(id) = Directory::register(&shared, identity, home).await else {
                return Outcome {
                    line: Reply::error(StoreFailed.to_string()).render(txn.as_deref()),
                    close: false,
                    home_of: None,
                    follow_up: None,
                };
            };
            Outcome {
                line: Reply::with(ReplyCode::Ack, id.clone()).render(txn.as_deref()),
                close: false,
                home_of: Some(id),
                follow_up: None,
            }
        });
    }
    let session = request.session.unwrap_or_default();
    let reconnect = matches!(request.command, Command::Reconnect);
    let Some(addr) = shared.directory.lookup(&session) else {
        let reply = if reconnect {
            Reply::code(ReplyCode::Reregister)
        } else {
            Reply::invalid_session()
        };
        return immediate(reply.render(txn.as_deref()));
    };
    let sent = addr.send(Exec {
        name: request.name,
        command: request.command,
        conn: home.clone(),
    });
    Box::pin(async move {
        let answer = match sent.await {
            Ok(answer) => answer,
            Err(_) if reconnect => Reply::code(ReplyCode::Reregister).into(),
            Err(_) => Reply::invalid_session().into(),
        };
        let reply = answer.reply;
        let home_of = (reconnect && reply.code == ReplyCode::Ok).then_some(session);
        Outcome {
            line: reply.render(txn.as_deref()),
            close: reply.close,
            home_of,
            follow_up: answer.follow_up.map(|rx| (rx, txn)),
        }
    })
}
