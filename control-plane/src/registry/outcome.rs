//! What a registry command produced for its connection (the reply line,
//! a follow-up, what it means for the connection), and running one on its
//! session's actor here: shared by client and relayed connections.

use std::pin::Pin;
use std::sync::Arc;

use crate::protocol::{Reply, ReplyCode};
use crate::session::{Exec, SessionActor, Sessions};

/// What one command produced: its line, and what it means for the connection.
pub(crate) struct Outcome {
    pub line: String,
    pub close: bool,
    /// This connection became the home of the session.
    pub home_of: Option<String>,
    /// A second line that follows later (MAINT_OK), rendered.
    pub follow_up: Option<FollowUp>,
    /// A REGISTER refused for its token: counted towards closing.
    pub unauthorized: bool,
    /// Relayed here for a session this replica does not run: nothing ran.
    pub not_here: bool,
}

pub(crate) type FollowUp = Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

pub(crate) type Pending = Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

impl Outcome {
    pub(crate) fn line(line: String) -> Outcome {
        Outcome {
            line,
            close: false,
            home_of: None,
            follow_up: None,
            unauthorized: false,
            not_here: false,
        }
    }
}

/// Runs a command on the session's actor here: `Ok` when it was sent to
/// it, `Err` when the session is not here (a `RECONNECT` claims it from
/// another replica; any other command gets `invalid session`).
pub(crate) fn run_here(
    sent: Result<actix::dev::Request<SessionActor, Exec>, Exec>,
    session: String,
    reconnect: bool,
    txn: Option<String>,
    sessions: Arc<Sessions>,
) -> Pending {
    Box::pin(async move {
        let sent = match sent {
            Ok(sent) => sent,
            Err(exec) if reconnect => match sessions.claim(&session).await {
                Ok(Some(addr)) => addr.send(exec),
                Ok(None) => {
                    return Outcome::line(Reply::code(ReplyCode::Reregister).render(txn.as_deref()))
                }
                Err(e) => return Outcome::line(Reply::error(e.to_string()).render(txn.as_deref())),
            },
            Err(_) => return Outcome::line(Reply::invalid_session().render(txn.as_deref())),
        };
        let answer = match sent.await {
            Ok(answer) => answer,
            Err(_) if reconnect => Reply::code(ReplyCode::Reregister).into(),
            // Its actor stopped before the command ran: with replicas it was
            // let go to another one, which runs it now.
            Err(_) if !sessions.replica_id().is_empty() => {
                Reply::error(crate::store::StoreFailed::Moved.to_string()).into()
            }
            Err(_) => Reply::invalid_session().into(),
        };
        let reply = answer.reply;
        let home_of = (reconnect && reply.code == ReplyCode::Ok).then_some(session);
        let line = reply.render(txn.as_deref());
        let follow_up = answer.follow_up.map(|rx| -> FollowUp {
            Box::pin(async move { rx.await.ok().map(|reply| reply.render(txn.as_deref())) })
        });
        Outcome {
            line,
            close: reply.close,
            home_of,
            follow_up,
            ..Outcome::line(String::new())
        }
    })
}
