//! The session actor: one per session, its mailbox serialises everything the
//! session does. Commits block the mailbox until the data planes answered;
//! slow probes (maintenance) run beside it and answer later.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

// The runtime's clock, so the grace follows a paused clock in tests.
use tokio::time::Instant;

use actix::prelude::*;
use portico_proto::settings::{OptionKey, FEATURE_GEOIP};
use portico_proto::RouteSpec;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, warn};

use super::env::SessionEnv;
use super::state::{Identity, Ops, SessionState};
use crate::config::committer::{
    GlobalChanged, GlobalSubscription, Propose, RemoveSession, SaveSession, TakeOver,
};
use crate::protocol::{Command, EventType, Reply, ReplyCode};
use crate::store::SessionRecord;

/// The connection that receives a session's events.
#[derive(Debug, Clone)]
pub struct Home {
    pub conn_id: u64,
    pub events: mpsc::UnboundedSender<String>,
}

/// A reply, and for MAINT_* a second line that follows when the probe decides.
pub struct Answer {
    pub reply: Reply,
    pub follow_up: Option<oneshot::Receiver<Reply>>,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer {
            reply,
            follow_up: None,
        }
    }
}

pub struct SessionActor {
    pub(super) state: SessionState,
    pub(super) env: Arc<SessionEnv>,
    pub(super) home: Option<Home>,
    pub(super) last_activity: Instant,
    pub(super) last_activity_wall: SystemTime,
    pub(super) home_closed_at: Option<Instant>,
    expiry: Option<SpawnHandle>,
    pub(super) drain_timer: Option<SpawnHandle>,
    /// A session taken over from this one (same service and instance).
    adopt_from: Option<String>,
    /// The grace of a session restored after a restart, until it reconnects.
    restore_grace: Option<std::time::Duration>,
    /// The id its latest command carried (memory only; a session restored
    /// from the store knows only its key until a command comes).
    presented: Option<String>,
    /// Taken over from a replica that died with no client told: its staged
    /// changes are gone, which its next apply (or validate, or diff) says
    /// instead of running; a `RECONNECT` also clears it.
    staged_lost: bool,
}

impl SessionActor {
    pub fn new(
        identity: Identity,
        env: Arc<SessionEnv>,
        home: Home,
        inherited: Option<(String, SessionState)>,
    ) -> Self {
        let (state, adopt_from) = match inherited {
            Some((old_id, mut state)) => {
                state.identity = identity;
                (state, Some(old_id))
            }
            None => (SessionState::new(identity), None),
        };
        SessionActor {
            state,
            env,
            home: Some(home),
            last_activity: Instant::now(),
            last_activity_wall: SystemTime::now(),
            home_closed_at: None,
            expiry: None,
            drain_timer: None,
            adopt_from,
            restore_grace: None,
            presented: None,
            staged_lost: false,
        }
    }

    /// A session restored from the store after a restart: detached, with
    /// `grace` to RECONNECT.
    pub fn restored(state: SessionState, env: Arc<SessionEnv>, grace: std::time::Duration) -> Self {
        SessionActor {
            state,
            env,
            home: None,
            last_activity: Instant::now(),
            last_activity_wall: SystemTime::now(),
            home_closed_at: Some(Instant::now()),
            expiry: None,
            drain_timer: None,
            adopt_from: None,
            restore_grace: Some(grace),
            presented: None,
            staged_lost: false,
        }
    }

    /// Marks a session taken over from a replica gone (see `staged_lost`).
    pub fn staged_lost(mut self, lost: bool) -> Self {
        self.staged_lost = lost;
        self
    }

    /// The id to answer its own client with: the one its commands carry.
    pub(super) fn presented_id(&self) -> String {
        self.presented
            .clone()
            .unwrap_or_else(|| self.state.identity.handle())
    }

    /// The session's key (what it is found and stored by; never its id).
    pub(super) fn id(&self) -> &str {
        &self.state.identity.id
    }

    /// Sends the session's routes as they will be to the committer. Once
    /// committed, `then` updates the actor; the answer it returns is sent
    /// after every data plane connected at commit time has answered.
    pub(super) fn commit<F>(
        &mut self,
        ctx: &mut Context<Self>,
        routes: Vec<RouteSpec>,
        record: SessionRecord,
        dry_run: bool,
        then: F,
    ) -> ResponseFuture<Answer>
    where
        F: FnOnce(&mut Self, &mut Context<Self>) -> Answer + 'static,
    {
        let by_country = routes.iter().find(|r| {
            let options = &r.settings.options;
            options.contains_key(&OptionKey::GeoAllow) || options.contains_key(&OptionKey::GeoDeny)
        });
        let by_country = by_country.map(|r| r.route_id.clone());
        let propose = Propose {
            session_key: self.id().to_string(),
            service: self.state.identity.service.clone(),
            routes,
            record,
            dry_run,
        };
        let (tx, rx) = oneshot::channel();
        let (planes, committer) = (self.env.planes.clone(), self.env.committer.clone());
        let checked = async move {
            // A route that filters by country needs every data plane to
            // have a GeoIP database: refused here, never served unfiltered.
            if let Some(route_id) = by_country {
                if let Some(node) = planes.lacking(FEATURE_GEOIP).await.first() {
                    return Err(format!(
                        "route {route_id}: geo rules need a GeoIP database, and data plane {node} has none (portico-dp --geoip-db)"
                    ));
                }
            }
            Ok(committer.send(propose).await)
        };
        let work = checked
            .into_actor(self)
            .then(move |result, act, ctx| {
                let result = match result {
                    Ok(result) => result,
                    Err(refused) => {
                        let refused: ResponseFuture<Answer> =
                            Box::pin(std::future::ready(Reply::error(refused).into()));
                        return actix::fut::wrap_future::<_, Self>(refused);
                    }
                };
                let waiting: ResponseFuture<Answer> = match result {
                    Ok(Ok(applied)) => {
                        let answer = then(act, ctx);
                        if let (Some(version), true) = (applied.version, act.wants_global()) {
                            act.emit(EventType::GlobalConfigChanged, json!({ "version": version }));
                        }
                        let span = info_span!("commit", session = %act.state.identity.handle(), version = ?applied.version);
                        Box::pin(async move {
                            if let Some(report) = applied.acknowledged().await {
                                let _g = span.enter();
                                info!(acked = ?report.acked, nacked = ?report.nacked, lagging = ?report.lagging, gone = ?report.gone, stopping = ?report.stopping, "data planes answered");
                            }
                            answer
                        })
                    }
                    Ok(Err(e)) => Box::pin(std::future::ready(Reply::error(e.to_string()).into())),
                    Err(_) => Box::pin(std::future::ready(
                        Reply::error("internal error: committer unavailable").into(),
                    )),
                };
                actix::fut::wrap_future::<_, Self>(waiting)
            })
            .map(move |answer, _, _| {
                let _ = tx.send(answer);
            });
        ctx.wait(work);
        answer_from(rx)
    }

    /// Makes `events` the session's subscriptions once its record holds
    /// them (so they come along to a restart or another replica), then
    /// answers `code`.
    pub(super) fn subscribe(
        &mut self,
        ctx: &mut Context<Self>,
        events: BTreeSet<EventType>,
        code: ReplyCode,
    ) -> ResponseFuture<Answer> {
        if events == self.state.subscriptions {
            return ready(Reply::code(code));
        }
        let mut record = self.state.record();
        record.subscriptions = SessionRecord::subscription_names(&events);
        let (tx, rx) = oneshot::channel();
        let work = self
            .env
            .committer
            .send(SaveSession(record))
            .into_actor(self)
            .map(move |saved, act, ctx| {
                let reply = match saved {
                    Ok(Ok(())) => {
                        act.state.subscriptions = events;
                        let global = act.wants_global().then(|| ctx.address().recipient());
                        act.set_global_subscription(global);
                        Reply::code(code)
                    }
                    Ok(Err(e)) => Reply::error(e.to_string()),
                    Err(_) => Reply::error("internal error: committer unavailable"),
                };
                let _ = tx.send(reply.into());
            });
        ctx.wait(work);
        answer_from(rx)
    }

    /// Republishes the active routes with new operational state.
    pub(super) fn commit_ops<F>(
        &mut self,
        ctx: &mut Context<Self>,
        ops: Ops,
        then: F,
    ) -> ResponseFuture<Answer>
    where
        F: FnOnce(&mut Self, &mut Context<Self>) -> Answer + 'static,
    {
        let routes = self.state.active_specs(&ops);
        let record = self.state.record_with(&ops);
        self.commit(ctx, routes, record, false, move |act, ctx| {
            act.state.ops = ops;
            then(act, ctx)
        })
    }

    /// Ends the session: its routes leave every data plane, then the actor stops.
    pub(super) fn end(
        &mut self,
        reason: &'static str,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Answer> {
        info!(session = %self.state.identity.handle(), reason, "session ending");
        (self.env.leave)(self.id(), &self.state.identity);
        self.set_global_subscription(None);
        let (tx, rx) = oneshot::channel();
        let work = self
            .env
            .committer
            .send(RemoveSession {
                session_key: self.id().to_string(),
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
                let _ = tx.send(Reply::code(ReplyCode::ShutdownOk).closing().into());
                ctx.stop();
            });
        ctx.wait(work);
        answer_from(rx)
    }

    /// Ends the session once the grace after losing its home connection has passed.
    fn check_grace(&mut self, ctx: &mut Context<Self>) {
        let Some(closed_at) = self.home_closed_at else {
            return;
        };
        if self.home.is_some() {
            return;
        }
        let grace = self.restore_grace.unwrap_or(self.env.settings.grace);
        let deadline = closed_at.max(self.last_activity) + grace;
        let now = Instant::now();
        if now >= deadline {
            drop(self.end("grace expired", ctx));
        } else {
            ctx.run_later(deadline - now, |act, ctx| act.check_grace(ctx));
        }
    }

    /// Restarts the staged-change expiry clock after a staging command.
    pub(super) fn touch_staged(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        let ttl = self.env.settings.staged_ttl;
        self.expiry = Some(ctx.run_later(ttl, |act, _| {
            act.expiry = None;
            if act.state.has_staged() {
                info!(session = %act.state.identity.handle(), "staged changes expired");
                act.state.rollback();
            }
        }));
    }

    /// Sends `EVENT|type|json` home if the session subscribed to it.
    pub(super) fn emit(&self, event: EventType, payload: Value) {
        debug_assert!(
            payload
                .as_object()
                .is_some_and(|o| o.keys().map(String::as_str).eq(sorted(event.doc().1))),
            "{} payload {payload} does not match its documented fields",
            event.as_str()
        );
        let subscribed = &self.state.subscriptions;
        let wanted = subscribed.contains(&event) || subscribed.contains(&EventType::All);
        if let (true, Some(home)) = (wanted, &self.home) {
            let _ = home
                .events
                .send(format!("EVENT|{}|{}\n", event.as_str(), payload));
        }
    }

    /// Registers (or with `None` removes) this session for global_config_changed.
    pub(super) fn set_global_subscription(&self, recipient: Option<Recipient<GlobalChanged>>) {
        self.env.committer.do_send(GlobalSubscription {
            session_key: self.id().to_string(),
            recipient,
        });
    }

    /// After a RECONNECT the ordinary session grace applies again.
    pub(super) fn forget_restore_grace(&mut self) {
        self.restore_grace = None;
    }

    pub(super) fn wants_global(&self) -> bool {
        let subscribed = &self.state.subscriptions;
        subscribed.contains(&EventType::GlobalConfigChanged) || subscribed.contains(&EventType::All)
    }
}

pub(super) fn ready(reply: Reply) -> ResponseFuture<Answer> {
    Box::pin(std::future::ready(reply.into()))
}

fn answer_from(rx: oneshot::Receiver<Answer>) -> ResponseFuture<Answer> {
    Box::pin(async move { rx.await.unwrap_or_else(|_| Reply::invalid_session().into()) })
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.home.is_none() {
            self.env.metrics.detached(false);
        }
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(session = %self.state.identity.handle(), service = %self.state.identity.service, instance = %self.state.identity.instance, "session started");
        if self.home.is_none() {
            self.env.metrics.detached(true);
        }
        // Subscriptions come along from a session taken over or a record.
        if self.wants_global() {
            self.set_global_subscription(Some(ctx.address().recipient()));
        }
        if let Some(old) = self.adopt_from.take() {
            // Re-home the inherited routes under this session in one commit,
            // before any command of the new session is handled.
            let routes = self.state.active_specs(&self.state.ops);
            let take_over = TakeOver {
                old_session: old,
                new_session: self.id().to_string(),
                service: self.state.identity.service.clone(),
                routes,
                record: self.state.record(),
            };
            let work =
                self.env
                    .committer
                    .send(take_over)
                    .into_actor(self)
                    .then(|result, act, _| {
                        let waiting: ResponseFuture<()> = match result {
                            Ok(applied) => Box::pin(async move {
                                applied.acknowledged().await;
                            }),
                            Err(_) => {
                                warn!(session = %act.state.identity.handle(), "take-over commit failed");
                                Box::pin(async {})
                            }
                        };
                        actix::fut::wrap_future::<_, Self>(waiting)
                    });
            ctx.wait(work);
        }
        if self.state.ops.drain.is_some() {
            self.schedule_drain_completed(ctx);
        }
        if self.home.is_none() {
            self.check_grace(ctx);
        }
    }
}

/// The session as the dashboard lists it.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct Describe;

impl Handler<Describe> for SessionActor {
    type Result = MessageResult<Describe>;

    fn handle(&mut self, _: Describe, _: &mut Context<Self>) -> Self::Result {
        let id = &self.state.identity;
        MessageResult(serde_json::json!({
            "session": id.handle(),
            "service": id.service,
            "instance": id.instance,
            "state": if self.home.is_some() { "connected" } else { "detached" },
            "routes_active": self.state.routes_active(),
            "routes_staged": self.state.routes_staged(),
            "connected_at": portico_proto::time::rfc3339(id.connected_at),
            "last_apply": self.state.last_apply.map(portico_proto::time::rfc3339),
        }))
    }
}

/// One command for this session, from connection `conn`.
#[derive(Message)]
#[rtype(result = "Answer")]
pub struct Exec {
    pub name: &'static str,
    pub command: Command,
    pub conn: Home,
    /// The session id the command carried: answered back to its own client
    /// (`SESSION_INFO`, `drain_completed`), never kept beyond the actor.
    pub presented: String,
}

impl Handler<Exec> for SessionActor {
    type Result = ResponseFuture<Answer>;

    fn handle(&mut self, msg: Exec, ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        self.last_activity_wall = SystemTime::now();
        tracing::debug!(session = %self.state.identity.handle(), command = msg.name, "command");
        self.presented = Some(msg.presented);
        if self.staged_lost {
            use crate::protocol::Command as C;
            match msg.command {
                C::Reconnect => self.staged_lost = false,
                C::ConfigApply | C::ConfigValidate | C::ConfigDiff | C::ConfigApplyPartial(_) => {
                    self.staged_lost = false;
                    return ready(Reply::error(
                        "the replica that ran this session failed; staged changes there are lost; stage them again",
                    ));
                }
                _ => {}
            }
        }
        self.execute(msg.command, msg.conn, ctx)
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
            self.env.metrics.detached(true);
            self.home_closed_at = Some(Instant::now());
            self.check_grace(ctx);
        }
    }
}

/// Sent when the same service and instance registers again: this session
/// hands over its active state and stops without removing its routes.
#[derive(Message)]
#[rtype(result = "Option<SessionState>")]
pub struct Surrender;

impl Handler<Surrender> for SessionActor {
    type Result = Option<SessionState>;

    fn handle(&mut self, _: Surrender, ctx: &mut Context<Self>) -> Option<SessionState> {
        info!(session = %self.state.identity.handle(), "session taken over");
        self.set_global_subscription(None);
        let mut state = self.state.clone();
        state.rollback();
        ctx.stop();
        Some(state)
    }
}

impl Handler<GlobalChanged> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: GlobalChanged, _: &mut Context<Self>) {
        self.emit(
            EventType::GlobalConfigChanged,
            json!({ "version": msg.version }),
        );
    }
}

/// The control plane is stopping: tell the home connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyShutdown;

impl Handler<NotifyShutdown> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: NotifyShutdown, _: &mut Context<Self>) {
        if let Some(home) = &self.home {
            let _ = home.events.send("SHUTDOWN\n".to_string());
        }
    }
}

/// A data plane saw something happen to one of this session's routes (a
/// backend's health or breaker changed); sent home if subscribed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RouteEvent {
    pub event: EventType,
    pub payload: Value,
}

impl Handler<RouteEvent> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: RouteEvent, _: &mut Context<Self>) {
        self.emit(msg.event, msg.payload);
    }
}

/// Field names in the order a JSON object (sorted keys) lists them.
fn sorted(fields: &[&'static str]) -> Vec<&'static str> {
    let mut fields = fields.to_vec();
    fields.sort_unstable();
    fields
}
