//! What each protocol command does to a session: the big match, kept apart
//! from the actor's plumbing in `actor.rs`.

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde_json::json;
use tokio::sync::oneshot;

use super::actor::{ready, Answer, SessionActor};
use super::guard::{Guard, Standing};
use super::state::{Drain, Ops, SessionState};
use crate::protocol::payload::json_reply;
use crate::protocol::{Command, EventType, MaintTarget, Reply, ReplyCode, RouteId, Scopes, Target};
use portico_proto::probe;
use portico_proto::time::rfc3339;

impl SessionActor {
    pub(super) fn execute(
        &mut self,
        command: Command,
        conn: super::Home,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        if let Err(why) = self.guard(&command) {
            return ready(Reply::error(why));
        }
        let directory = &self.shared.directory;
        let reply = match command {
            Command::Register { .. } => Reply::error("internal error: REGISTER reached a session"),
            Command::Reconnect => {
                if self.home.is_none() {
                    self.shared.metrics.detached(false);
                }
                self.home = Some(conn);
                self.home_closed_at = None;
                self.forget_restore_grace();
                Reply::ok()
            }
            Command::Ping => Reply::code(ReplyCode::Pong),
            Command::SessionInfo => self.session_info(),
            Command::ClientShutdown => return self.end("client shutdown", ctx),

            Command::RouteAdd(input) => {
                match self
                    .state
                    .add_route_with(input, || directory.allocate_route())
                {
                    Ok(id) => {
                        self.touch_staged(ctx);
                        Reply::with(ReplyCode::RouteOk, id.to_string())
                    }
                    Err(e) => Reply::error(e.to_string()),
                }
            }
            Command::RouteAddBulk(inputs) => {
                let ids: Result<Vec<_>, _> = inputs
                    .into_iter()
                    .map(|input| {
                        self.state
                            .add_route_with(input, || directory.allocate_route())
                    })
                    .collect();
                self.touch_staged(ctx);
                match ids {
                    Ok(ids) => {
                        let items: Vec<_> = ids
                            .iter()
                            .map(|id| json!({"route_id": id.to_string(), "status": "ok"}))
                            .collect();
                        Reply::with(
                            ReplyCode::RouteBulkOk,
                            serde_json::Value::Array(items).to_string(),
                        )
                    }
                    Err(e) => Reply::error(e.to_string()),
                }
            }
            Command::RouteUpdate { route, field } => match self.state.update_route(route, field) {
                Ok(()) => {
                    self.touch_staged(ctx);
                    Reply::code(ReplyCode::RouteOk)
                }
                Err(e) => Reply::error(e.to_string()),
            },
            Command::RouteRemove(id) => match self.state.remove_route(id) {
                Ok(()) => {
                    self.touch_staged(ctx);
                    Reply::code(ReplyCode::RouteOk)
                }
                Err(e) => Reply::error(e.to_string()),
            },
            Command::RouteList { compressed } => {
                json_reply(ReplyCode::RouteListOk, &self.state.list_json(), compressed)
            }

            Command::HeadersSet {
                target,
                name,
                value,
            } => self.stage(ctx, target, ReplyCode::HeadersOk, |s| {
                let entry = s.headers.edit().entry(target).or_default();
                entry.insert(name.to_ascii_lowercase(), (name, value));
            }),
            Command::HeadersRemove { target, name } => self.stage_with(
                ctx,
                target,
                ReplyCode::HeadersOk,
                SessionState::knows,
                |s| {
                    if let Some(entry) = s.headers.edit().get_mut(&target) {
                        entry.remove(&name.to_ascii_lowercase());
                    }
                    s.headers.edit().retain(|_, m| !m.is_empty());
                },
            ),
            Command::OptionsSet { target, key, value } => {
                self.stage(ctx, target, ReplyCode::OptionsOk, |s| {
                    s.options
                        .edit()
                        .entry(target)
                        .or_default()
                        .insert(key, value);
                })
            }
            Command::OptionsRemove { target, key } => self.stage_with(
                ctx,
                target,
                ReplyCode::OptionsOk,
                SessionState::knows,
                |s| {
                    if let Some(entry) = s.options.edit().get_mut(&target) {
                        entry.remove(&key);
                    }
                    s.options.edit().retain(|_, m| !m.is_empty());
                },
            ),
            Command::HealthSet { route, spec } => {
                self.stage(ctx, Target::Route(route), ReplyCode::HealthOk, |s| {
                    s.health.edit().insert(route, spec);
                })
            }
            Command::RateLimitSet { target, spec } => {
                self.stage(ctx, target, ReplyCode::RatelimitOk, |s| {
                    s.ratelimit.edit().insert(target, spec);
                })
            }
            Command::CircuitBreakerSet { target, spec } => {
                self.stage(ctx, target, ReplyCode::CircuitOk, |s| {
                    s.breaker.edit().insert(target, spec);
                })
            }
            Command::CircuitBreakerStatus(route) => {
                if !self.state.owns(route) {
                    Reply::error("route not found")
                } else {
                    let status = self.shared.telemetry.breaker_status(route);
                    json_reply(ReplyCode::CircuitStatusOk, &status, false)
                }
            }
            Command::CircuitBreakerReset(route) => {
                if !self.state.owns(route) {
                    Reply::error("route not found")
                } else {
                    self.shared.telemetry.forget_breakers(route, None);
                    let planes = self.shared.planes.clone();
                    return Box::pin(async move {
                        planes.reset_breaker(route).await;
                        Reply::code(ReplyCode::CircuitOk).into()
                    });
                }
            }

            Command::ConfigValidate => return self.apply(Scopes::EVERYTHING, true, ctx),
            Command::ConfigApply => return self.apply(Scopes::EVERYTHING, false, ctx),
            Command::ConfigApplyPartial(scopes) => return self.apply(scopes, false, ctx),
            Command::ConfigRollback => {
                self.state.rollback();
                Reply::ok()
            }
            Command::ConfigDiff => json_reply(ReplyCode::DiffOk, &self.state.diff_json(), false),

            Command::StatsGet { target, compressed } => match target {
                Target::Route(id) if !self.state.owns(id) => Reply::error("route not found"),
                Target::Route(id) => json_reply(
                    ReplyCode::StatsOk,
                    &self.shared.telemetry.route_stats(id),
                    compressed,
                ),
                Target::All => {
                    let all: Vec<_> = self
                        .state
                        .active_ids()
                        .map(|id| self.shared.telemetry.route_stats(id))
                        .collect();
                    json_reply(
                        ReplyCode::StatsOk,
                        &serde_json::Value::Array(all),
                        compressed,
                    )
                }
            },
            Command::BackendTest(url) => {
                let planes = self.shared.planes.clone();
                return Box::pin(async move { planes.backend_test(url).await.into() });
            }

            Command::DrainStart(duration) => {
                let started_at = SystemTime::now();
                let drain = Drain {
                    started_at,
                    duration,
                };
                let ops = Ops {
                    drain: Some(drain),
                    ..self.state.ops.clone()
                };
                return self.commit_ops(ctx, ops, move |act, ctx| {
                    act.schedule_drain_completed(ctx);
                    Reply::with(ReplyCode::DrainOk, rfc3339(drain.ends_at())).into()
                });
            }
            Command::DrainStatus => match self.state.ops.drain {
                None => Reply::error("no drain in progress"),
                Some(d) => {
                    let now = SystemTime::now();
                    let elapsed = now
                        .duration_since(d.started_at)
                        .unwrap_or_default()
                        .min(d.duration);
                    json_reply(
                        ReplyCode::DrainStatusOk,
                        &json!({
                            "active": true,
                            "started_at": rfc3339(d.started_at),
                            "duration_seconds": d.duration.as_secs_f64(),
                            "elapsed_seconds": elapsed.as_secs_f64().floor(),
                            "remaining_seconds": (d.duration - elapsed).as_secs_f64().ceil(),
                            "traffic_percent": (100.0 * d.weight_at(now)).round(),
                        }),
                        false,
                    )
                }
            },
            Command::DrainCancel => {
                if self.state.ops.drain.is_none() {
                    Reply::error("no drain in progress")
                } else {
                    let ops = Ops {
                        drain: None,
                        ..self.state.ops.clone()
                    };
                    return self.commit_ops(ctx, ops, |act, ctx| {
                        if let Some(handle) = act.drain_timer.take() {
                            ctx.cancel_future(handle);
                        }
                        Reply::code(ReplyCode::DrainOk).into()
                    });
                }
            }

            Command::MaintEnter { target, backend } => {
                return self.maint_enter(target, backend, ctx)
            }
            Command::MaintExit(target) => return self.maint_exit(target, ctx),
            Command::MaintStatus => {
                let ops = &self.state.ops;
                let entered = ops.maintenance.values().min().copied();
                json_reply(
                    ReplyCode::MaintStatusOk,
                    &json!({
                        "in_maintenance": ops.maintenance.keys().map(RouteId::to_string).collect::<Vec<_>>(),
                        "maintenance_backend": if ops.maintenance.is_empty() { None } else { ops.maintenance_backend.as_ref().map(|b| b.to_string()) },
                        "entered_at": entered.map(rfc3339),
                    }),
                    false,
                )
            }

            Command::Subscribe(event) => {
                let mut events = self.state.subscriptions.clone();
                events.insert(event);
                return self.subscribe(ctx, events, ReplyCode::SubscribeOk);
            }
            Command::Unsubscribe(event) => {
                let mut events = self.state.subscriptions.clone();
                if event == EventType::All {
                    events.clear();
                } else {
                    events.remove(&event);
                }
                return self.subscribe(ctx, events, ReplyCode::UnsubscribeOk);
            }
        };
        ready(reply)
    }

    /// Applies a staging edit to settings, after checking the target route.
    fn stage(
        &mut self,
        ctx: &mut Context<Self>,
        target: Target,
        ok: ReplyCode,
        edit: impl FnOnce(&mut super::settings::Settings),
    ) -> Reply {
        self.stage_with(ctx, target, ok, SessionState::owns, edit)
    }

    /// `stage` with the rule for which routes may be named; removals also
    /// accept a route pending removal, so its settings can be taken back.
    fn stage_with(
        &mut self,
        ctx: &mut Context<Self>,
        target: Target,
        ok: ReplyCode,
        visible: fn(&SessionState, RouteId) -> bool,
        edit: impl FnOnce(&mut super::settings::Settings),
    ) -> Reply {
        if let Target::Route(id) = target {
            if !visible(&self.state, id) {
                return Reply::error("route not found");
            }
        }
        edit(&mut self.state.settings);
        self.touch_staged(ctx);
        Reply::code(ok)
    }

    fn apply(
        &mut self,
        scopes: Scopes,
        dry_run: bool,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        let proposal = match self.state.propose(scopes) {
            Ok(p) => p,
            Err(e) => return ready(Reply::error(e.to_string())),
        };
        let routes = self
            .state
            .to_specs(&proposal.routes, &proposal.settings, &self.state.ops);
        let at = SystemTime::now();
        let record = self.state.record_after(&proposal, &self.state.ops, at);
        self.commit(ctx, routes, record, dry_run, move |act, _| {
            if !dry_run {
                act.state.commit(proposal, at);
            }
            Reply::ok().into()
        })
    }

    fn maint_enter(
        &mut self,
        target: MaintTarget,
        backend: Option<portico_proto::BackendUrl>,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        let ids = match self.state.maintenance_targets(&target) {
            Ok(ids) => ids,
            Err(e) => return ready(Reply::error(e.to_string())),
        };
        let identity = &self.state.identity;
        let backend = backend.or_else(|| match (identity.peer_ip, identity.maintenance_port) {
            (Some(ip), port) if port != 0 => portico_proto::BackendUrl::parse(&format!(
                "http://{}",
                std::net::SocketAddr::new(ip, port)
            ))
            .ok(),
            _ => None,
        });
        let mut ops = self.state.ops.clone();
        let now = SystemTime::now();
        for id in ids {
            ops.maintenance.entry(id).or_insert(now);
        }
        ops.maintenance_backend = backend.clone();
        let limit = self.shared.settings.maintenance_probe_limit;
        self.commit_ops(ctx, ops, move |_, _| {
            let urls: Vec<_> = backend.into_iter().collect();
            follow_up_probe(urls, limit, target, "maintenance page")
        })
    }

    fn maint_exit(
        &mut self,
        target: MaintTarget,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        let ids = match self.state.maintenance_targets(&target) {
            Ok(ids) => ids,
            Err(e) => return ready(Reply::error(e.to_string())),
        };
        let mut ops = self.state.ops.clone();
        for id in &ids {
            ops.maintenance.remove(id);
        }
        let urls = self.state.backends_of(&ids);
        let limit = self.shared.settings.maintenance_probe_limit;
        self.commit_ops(ctx, ops, move |_, _| {
            follow_up_probe(urls, limit, target, "backend")
        })
    }

    pub(super) fn schedule_drain_completed(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.drain_timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(drain) = self.state.ops.drain else {
            return;
        };
        let wait = drain
            .ends_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        self.drain_timer = Some(ctx.run_later(wait, move |act, _| {
            act.drain_timer = None;
            if act.state.ops.drain == Some(drain) {
                act.emit(
                    EventType::DrainCompleted,
                    json!({"session_id": act.id(), "completed_at": rfc3339(drain.ends_at())}),
                );
            }
        }));
    }

    /// Checks a command against the backend policy and the session's grant.
    fn guard(&self, command: &Command) -> Result<(), String> {
        let settings = &self.shared.settings;
        let tokens = self.shared.auth.as_ref().map(|auth| auth.tokens());
        let grant = match (&tokens, self.state.identity.token) {
            (Some(tokens), Some(hash)) => tokens.grant(&hash),
            _ => None,
        };
        let guard = Guard {
            policy: &settings.backend_policy,
            standing: match tokens {
                None => Standing::Open,
                Some(_) => Standing::Token(grant.as_deref()),
            },
            max_routes: settings.limits.routes_per_session,
        };
        guard.check(command, &self.state)
    }

    fn session_info(&self) -> Reply {
        let id = &self.state.identity;
        let uptime = SystemTime::now()
            .duration_since(id.connected_at)
            .unwrap_or_default()
            .as_secs();
        json_reply(
            ReplyCode::SessionOk,
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
}

/// `ACK` now; `MAINT_OK|target` once every url answers below 500 (none: at once).
fn follow_up_probe(
    urls: Vec<portico_proto::BackendUrl>,
    limit: Duration,
    target: MaintTarget,
    what: &'static str,
) -> Answer {
    let (tx, rx) = oneshot::channel();
    actix::spawn(async move {
        let reply = if probe::wait_healthy(urls, limit).await {
            Reply::with(ReplyCode::MaintOk, target.to_string())
        } else {
            Reply::error(format!("timeout waiting for {what} to become reachable"))
        };
        let _ = tx.send(reply);
    });
    Answer {
        reply: Reply::code(ReplyCode::Ack),
        follow_up: Some(rx),
    }
}
