//! The registry listener: one task per TCP connection that frames lines,
//! parses them, hands each to its session's actor and writes the replies in
//! command order, with events interleaved as whole lines.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use crate::protocol::framing::{Frame, LineFramer, MAX_LINE};
use crate::protocol::parser::command_names;
use crate::protocol::{parse, Command, Reply, ReplyCode};
use crate::registry::auth::TokenHash;
use crate::registry::conn_limits::ConnCounter;
use crate::registry::forward::{self, Forwarder};
use crate::registry::invalid_sessions::{self, Counted, InvalidSessions};
use crate::registry::outcome::{run_here, FollowUp, Outcome, Pending};

/// How every command whose session is not found is answered.
const INVALID_SESSION: &str = "ERROR|invalid session";
use crate::session::key::session_key;
use crate::session::{Exec, Home, HomeClosed, Identity, Sessions};

/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Commands read ahead of their replies on one connection.
const MAX_IN_FLIGHT: usize = 1024;
/// Refused REGISTERs (bad or missing tokens) after which a connection is closed.
const MAX_AUTH_FAILURES: u32 = 3;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// One registry connection as its commands see it: a client's, or one
/// relayed from another replica.
pub(crate) struct Conn {
    pub home: Home,
    pub peer: SocketAddr,
    /// Sessions other replicas run are relayed to them from here; `None` on
    /// a relayed connection, which never relays again.
    pub forward: Option<Arc<Forwarder>>,
    /// Invalid session ids counted by address; `None` on a relayed
    /// connection (the replica it came from counts them).
    pub guessing: Option<Arc<InvalidSessions>>,
}

pub async fn serve(listener: TcpListener, sessions: Arc<Sessions>) {
    let counter = Arc::new(ConnCounter::default());
    let guessing = Arc::new(InvalidSessions::new(
        sessions.env.settings.limits.invalid_sessions_per_ip,
    ));
    let mut last_refusal_log: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "registry accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = sessions.env.settings.limits;
        let Some(slot) = counter.acquire(peer.ip(), limits.connections, limits.connections_per_ip)
        else {
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_refusal_log = Some(std::time::Instant::now());
                warn!(%peer, open = counter.open(), max = limits.connections, max_per_ip = limits.connections_per_ip, "registry connection refused: too many connections");
            }
            tokio::spawn(refuse(stream));
            continue;
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
        let (sessions, guessing) = (sessions.clone(), guessing.clone());
        sessions.directory.arbiter().spawn(async move {
            match TcpStream::from_std(std_stream) {
                Ok(stream) => serve_connection(stream, peer, sessions, guessing).await,
                Err(e) => warn!(error = %e, "registry connection hand-off failed"),
            }
            drop(slot);
        });
    }
}

/// Tells a connection over the limits why, and closes it.
async fn refuse(mut stream: TcpStream) {
    let line = Reply::error("too many connections").render(None);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    sessions: Arc<Sessions>,
    guessing: Arc<InvalidSessions>,
) {
    let conn_id = next_conn_id();
    debug!(conn_id, %peer, "registry connection opened");
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, LineFramer::default());
    let mut out = BufWriter::new(write);
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<String>();
    let conn = Conn {
        home: Home {
            conn_id,
            events: events_tx.clone(),
        },
        peer,
        forward: Some(Arc::new(Forwarder::new(
            sessions.env.planes.peers.clone(),
            events_tx,
        ))),
        guessing: Some(guessing),
    };
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut follow_ups: FuturesUnordered<FollowUp> = FuturesUnordered::new();
    let mut homes: HashSet<String> = HashSet::new();
    let mut reading = true;
    let mut auth_failures = 0;
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let line_limit = sessions.env.settings.limits.line;
    let mut line_check = tokio::time::interval(
        (line_limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
    );

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
                    if let Some(follow_up) = outcome.follow_up {
                        follow_ups.push(follow_up);
                    }
                    if outcome.unauthorized {
                        auth_failures += 1;
                    }
                    if outcome.close || auth_failures >= MAX_AUTH_FAILURES {
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
                    pending.push_back(counted(frame, &conn, &sessions));
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
            _ = line_check.tick() => {
                if frames.decoder().partial_since().is_some_and(|t| t.elapsed() >= line_limit) {
                    debug!(conn_id, %peer, "registry connection held an unfinished line too long; closing");
                    break 'conn;
                }
            }
        }
        // A client that half-closed after MAINT_ENTER still gets its MAINT_OK.
        if !reading && pending.is_empty() && follow_ups.is_empty() {
            break;
        }
    }
    for id in homes {
        if let Some(addr) = sessions.directory.lookup(&id) {
            addr.do_send(HomeClosed { conn_id });
        }
    }
    debug!(conn_id, "registry connection closed");
}

async fn write_line<W: AsyncWriteExt + Unpin>(out: &mut W, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).await
}

pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

fn immediate(line: String) -> Pending {
    Box::pin(std::future::ready(Outcome::line(line)))
}

/// [`handle_frame`], with its command and time kept for the metrics.
pub(crate) fn counted(frame: Frame, conn: &Conn, sessions: &Arc<Sessions>) -> Pending {
    let command = match &frame {
        Frame::Line(line) => {
            let first = line.split('|').next().unwrap_or("");
            command_names().find(|n| n.eq_ignore_ascii_case(first))
        }
        _ => None,
    };
    let started = std::time::Instant::now();
    let metrics = sessions.env.metrics.clone();
    let carries_session = command.is_some_and(|c| c != "REGISTER");
    let guessing = conn.guessing.clone().filter(|_| carries_session);
    let address = conn.peer.ip();
    if guessing
        .as_ref()
        .is_some_and(|g| g.refused(address, started))
    {
        metrics.invalid_sessions[1].fetch_add(1, Ordering::Relaxed);
        metrics.command(command, false);
        return immediate(
            Reply::error("too many invalid session ids from this address; try again later")
                .render(None),
        );
    }
    let outcome = handle_frame(frame, conn, sessions);
    Box::pin(async move {
        let outcome = outcome.await;
        if let Some(guessing) = guessing.filter(|_| outcome.line.starts_with(INVALID_SESSION)) {
            metrics.invalid_sessions[0].fetch_add(1, Ordering::Relaxed);
            if guessing.record(address, started) == Counted::JustOver {
                warn!(%address, limit = guessing.limit(), window = ?invalid_sessions::WINDOW, "too many invalid session ids from this address; its session commands are refused for the rest of the window");
            }
        }
        let ok = !outcome.line.starts_with("ERROR");
        metrics.command(command, ok);
        if command == Some("CONFIG_APPLY") && outcome.line.starts_with("OK") {
            metrics.apply.observe(started.elapsed().as_secs_f64());
        }
        outcome
    })
}

fn handle_frame(frame: Frame, conn: &Conn, sessions: &Arc<Sessions>) -> Pending {
    let peer = conn.peer;
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
        mut metadata,
    } = request.command
    {
        // The token is never kept, logged or shown, whether auth is on or not.
        let token = metadata.remove("token");
        let token = match &sessions.env.auth {
            None => None,
            Some(auth) => {
                let presented = token.as_ref().and_then(|t| t.as_str()).map(TokenHash::of);
                let granted = presented.filter(|hash| {
                    auth.tokens()
                        .grant(hash)
                        .is_some_and(|g| g.covers_service(&service))
                });
                if granted.is_none() {
                    warn!(%peer, service = %service, token_given = presented.is_some(), "REGISTER refused: unauthorized");
                    return Box::pin(std::future::ready(Outcome {
                        unauthorized: true,
                        ..Outcome::line(Reply::error("unauthorized").render(txn.as_deref()))
                    }));
                }
                granted
            }
        };
        let max = sessions.env.settings.limits.sessions;
        if sessions.directory.len() >= max && !sessions.directory.has_instance(&service, &instance)
        {
            let reply = Reply::error(format!("too many sessions (max {max})"));
            return immediate(reply.render(txn.as_deref()));
        }
        let identity = Identity {
            id: String::new(),
            service,
            instance,
            maintenance_port,
            metadata,
            peer_ip: Some(peer.ip()),
            connected_at: SystemTime::now(),
            token,
        };
        let (sessions, home) = (sessions.clone(), conn.home.clone());
        return Box::pin(async move {
            let id = match sessions.register(identity, home).await {
                Ok(id) => id,
                Err(e) => return Outcome::line(Reply::error(e.to_string()).render(txn.as_deref())),
            };
            Outcome {
                home_of: Some(session_key(&id)),
                ..Outcome::line(Reply::with(ReplyCode::Ack, id).render(txn.as_deref()))
            }
        });
    }
    // Found by the key of the id it carries: the same work for any id.
    let presented = request.session.unwrap_or_default();
    let session = session_key(&presented);
    let reconnect = matches!(request.command, Command::Reconnect);
    let exec = Exec {
        name: request.name,
        command: request.command,
        conn: conn.home.clone(),
        presented,
    };
    // Sent now, so pipelined commands reach the session in order.
    if let Some(addr) = sessions.directory.lookup(&session) {
        return run_here(
            Ok(addr.send(exec)),
            session,
            reconnect,
            txn,
            sessions.clone(),
        );
    }
    if reconnect || sessions.replica_id().is_empty() {
        // RECONNECT: another replica may run it (or ran it, and died).
        return run_here(Err(exec), session, reconnect, txn, sessions.clone());
    }
    match &conn.forward {
        Some(forward) => forward::command(forward, line, session, txn, exec, sessions),
        // Relayed here: run here if the store says so (a move that raced a
        // commit can leave a session stored here without its actor).
        None => {
            let sessions = sessions.clone();
            Box::pin(async move {
                match sessions.stored_replica(&session).await {
                    Ok(Some(replica)) if replica == sessions.replica_id() => {
                        forward::here(exec, session, txn, &sessions).await
                    }
                    _ => Outcome {
                        not_here: true,
                        ..Outcome::line(String::new())
                    },
                }
            })
        }
    }
}
