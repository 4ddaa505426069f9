//! The session actor: one per session, its mailbox serialises everything the
//! session does. Commits block the mailbox until the data planes answered.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, warn};

use super::state::{Identity, SessionState};
use crate::committer::{Propose, RemoveSession};
use crate::directory::Shared;
use crate::payload::json_reply;
use crate::protocol::{Command, Reply};

/// The connection that receives a session's events.
#[derive(Debug, Clone)]
pub struct Home {
    pub conn_id: u64,
    #[expect(
        dead_code,
        reason = "events arrive with SUBSCRIBE in the full protocol"
    )]
    pub events: mpsc::UnboundedSender<String>,
}

pub struct SessionActor {
    state: SessionState,
    shared: Arc<Shared>,
    home: Option<Home>,
    last_activity: Instant,
    home_closed_at: Option<Instant>,
    last_activity_wall: SystemTime,
}

impl SessionActor {
    pub fn new(identity: Identity, shared: Arc<Shared>, home: Home) -> Self {
        SessionActor {
            state: SessionState::new(identity),
            shared,
            home: Some(home),
            last_activity: Instant::now(),
            home_closed_at: None,
            last_activity_wall: SystemTime::now(),
        }
    }

    fn id(&self) -> &str {
        &self.state.identity.id
    }

    fn session_info(&self) -> Reply {
        let id = &self.state.identity;
        let uptime = SystemTime::now()
            .duration_since(id.connected_at)
            .unwrap_or_default()
            .as_secs();
        json_reply(
            "SESSION_OK",
            &json!({
                "session_id": id.id,
                "service_name": id.service,
                "instance_name": id.instance,
                "connected_at": rfc3339(id.connected_at),
                "uptime_seconds": uptime,
                "routes_active": self.state.routes_active(),
                "routes_staged": self.state.routes_staged(),
                "last_apply": self.state.last_apply.map(rfc3339),
                "last_activity": rfc3339(self.last_activity_wall),
                "metadata": id.metadata,
            }),
            false,
        )
    }

    /// Validates and (unless `dry_run`) commits the staged routes; the reply
    /// is sent once every data plane connected at commit time has answered.
    fn apply(&mut self, dry_run: bool, ctx: &mut Context<Self>) -> ResponseFuture<Reply> {
        let proposed = self.state.proposed();
        if let Err(e) = self.state.validate(&proposed) {
            return ready(Reply::error(e.to_string()));
        }
        let propose = Propose {
            session_id: self.id().to_string(),
            service: self.state.identity.service.clone(),
            routes: self.state.to_proto(&proposed),
            dry_run,
        };
        let (tx, rx) = oneshot::channel();
        let work = self
            .shared
            .committer
            .send(propose)
            .into_actor(self)
            .then(move |result, act, _| {
                let waiting: ResponseFuture<Reply> = match result {
                    Ok(Ok(applied)) => {
                        if !dry_run {
                            act.state.commit(proposed, SystemTime::now());
                        }
                        let span = info_span!("apply", session = %act.id(), version = ?applied.version);
                        Box::pin(async move {
                            if let Some(report) = applied.acknowledged().await {
                                let _g = span.enter();
                                info!(acked = ?report.acked, nacked = ?report.nacked, lagging = ?report.lagging, "applied");
                            }
                            Reply::ok()
                        })
                    }
                    Ok(Err(e)) => ready(Reply::error(e.to_string())),
                    Err(_) => ready(Reply::error("internal error: committer unavailable")),
                };
                actix::fut::wrap_future::<_, Self>(waiting)
            })
            .map(move |reply, _, _| {
                let _ = tx.send(reply);
            });
        ctx.wait(work);
        reply_from(rx)
    }

    /// Ends the session: its routes leave every data plane, then the actor stops.
    fn end(&mut self, reason: &'static str, ctx: &mut Context<Self>) -> ResponseFuture<Reply> {
        info!(session = %self.id(), reason, "session ending");
        self.shared.directory.remove(self.id());
        let (tx, rx) = oneshot::channel();
        let work = self
            .shared
            .committer
            .send(RemoveSession {
                session_id: self.id().to_string(),
            })
            .into_actor(self)
            .then(|result, _, _| {
                let waiting: ResponseFuture<()> = match result {
                    Ok(applied) => Box::pin(async move {
                        applied.acknowledged().await;
                    }),
                    Err(_) => Box::pin(async {}),
                };
                actix::fut::wrap_future::<_, Self>(waiting)
            })
            .map(move |_, _, ctx: &mut Context<Self>| {
                let _ = tx.send(Reply::code("SHUTDOWN_OK").closing());
                ctx.stop();
            });
        ctx.wait(work);
        reply_from(rx)
    }

    /// Ends the session once the grace after losing its home connection has passed.
    fn check_grace(&mut self, ctx: &mut Context<Self>) {
        let Some(closed_at) = self.home_closed_at else {
            return;
        };
        if self.home.is_some() {
            return;
        }
        let deadline = closed_at.max(self.last_activity) + self.shared.settings.grace;
        let now = Instant::now();
        if now >= deadline {
            drop(self.end("grace expired", ctx));
        } else {
            ctx.run_later(deadline - now, |act, ctx| act.check_grace(ctx));
        }
    }
}

fn ready(reply: Reply) -> ResponseFuture<Reply> {
    Box::pin(std::future::ready(reply))
}

fn reply_from(rx: oneshot::Receiver<Reply>) -> ResponseFuture<Reply> {
    Box::pin(async move { rx.await.unwrap_or_else(|_| Reply::invalid_session()) })
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        info!(session = %self.id(), service = %self.state.identity.service, instance = %self.state.identity.instance, "session registered");
    }
}

/// One command for this session, from connection `conn`.
#[derive(Message)]
#[rtype(result = "Reply")]
pub struct Exec {
    pub command: Command,
    pub conn: Home,
}

impl Handler<Exec> for SessionActor {
    type Result = ResponseFuture<Reply>;

    fn handle(&mut self, msg: Exec, ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        self.last_activity_wall = SystemTime::now();
        let directory = &self.shared.directory;
        let reply = match msg.command {
            Command::Reconnect => {
                self.home = Some(msg.conn);
                self.home_closed_at = None;
                Reply::ok()
            }
            Command::Ping => Reply::code("PONG"),
            Command::SessionInfo => self.session_info(),
            Command::ClientShutdown => return self.end("client shutdown", ctx),
            Command::RouteAdd(input) => {
                let id = self.state.add_route(input, || directory.allocate_route());
                Reply::with("ROUTE_OK", id.to_string())
            }
            Command::RouteRemove(id) => match self.state.remove_route(id) {
                Ok(()) => Reply::code("ROUTE_OK"),
                Err(e) => Reply::error(e.to_string()),
            },
            Command::RouteList { compressed } => {
                json_reply("ROUTE_LIST_OK", &self.state.list_json(), compressed)
            }
            Command::ConfigValidate => return self.apply(true, ctx),
            Command::ConfigApply => return self.apply(false, ctx),
            Command::ConfigRollback => {
                self.state.rollback();
                Reply::ok()
            }
            Command::Register { .. } => Reply::error("internal error: REGISTER reached a session"),
            other => Reply::error(format!("not implemented: {}", other.name())),
        };
        ready(reply)
    }
}

/// The connection `conn_id` closed; if it was home, the grace period starts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HomeClosed {
    pub conn_id: u64,
}

impl Handler<HomeClosed> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: HomeClosed, ctx: &mut Context<Self>) {
        if self.home.as_ref().is_some_and(|h| h.conn_id == msg.conn_id) {
            self.home = None;
            self.home_closed_at = Some(Instant::now());
            let grace: Duration = self.shared.settings.grace;
            if grace.is_zero() {
                warn!(session = %self.id(), "session grace is zero");
            }
            self.check_grace(ctx);
        }
    }
}
