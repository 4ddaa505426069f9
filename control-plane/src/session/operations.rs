//! What the session's operational commands do: its routes' telemetry and
//! breakers, drains, maintenance with its probes, and event subscriptions.

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde_json::json;
use tokio::sync::oneshot;

use super::actor::{ready, Answer, SessionActor};
use super::state::{Drain, Ops};
use crate::protocol::payload::json_reply;
use crate::protocol::{Command, EventType, MaintTarget, Reply, ReplyCode, RouteId, Target};
use portico_proto::probe;
use portico_proto::time::rfc3339;

impl SessionActor {
    /// CIRCUIT_BREAKER_STATUS and _RESET, STATS_GET, BACKEND_TEST.
    pub(super) fn telemetry_command(&mut self, command: Command) -> actix::ResponseFuture<Answer> {
        let reply = match command {
            Command::CircuitBreakerStatus(route) => {
                if !self.state.owns(route) {
                    Reply::error("route not found")
                } else {
                    let status = self.env.telemetry.breaker_status(route);
                    json_reply(ReplyCode::CircuitStatusOk, &status, false)
                }
            }
            Command::CircuitBreakerReset(route) => {
                if !self.state.owns(route) {
                    Reply::error("route not found")
                } else {
                    self.env.telemetry.forget_breakers(route, None);
                    let planes = self.env.planes.clone();
                    return Box::pin(async move {
                        planes.reset_breaker(route).await;
                        Reply::code(ReplyCode::CircuitOk).into()
                    });
                }
            }

            Command::StatsGet { target, compressed } => match target {
                Target::Route(id) if !self.state.owns(id) => Reply::error("route not found"),
                Target::Route(id) => json_reply(
                    ReplyCode::StatsOk,
                    &self.env.telemetry.route_stats(id),
                    compressed,
                ),
                Target::All => {
                    let all: Vec<_> = self
                        .state
                        .active_ids()
                        .map(|id| self.env.telemetry.route_stats(id))
                        .collect();
                    json_reply(
                        ReplyCode::StatsOk,
                        &serde_json::Value::Array(all),
                        compressed,
                    )
                }
            },
            Command::BackendTest(url) => {
                let planes = self.env.planes.clone();
                return Box::pin(async move { planes.backend_test(url).await.into() });
            }

            other => Reply::error(format!(
                "internal error: {other:?} reached the wrong handler"
            )),
        };
        ready(reply)
    }

    /// DRAIN_START, DRAIN_STATUS, DRAIN_CANCEL.
    pub(super) fn drain_command(
        &mut self,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        let reply = match command {
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

            other => Reply::error(format!(
                "internal error: {other:?} reached the wrong handler"
            )),
        };
        ready(reply)
    }

    /// MAINT_ENTER, MAINT_EXIT, MAINT_STATUS.
    pub(super) fn maint_command(
        &mut self,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        let reply = match command {
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

            other => Reply::error(format!(
                "internal error: {other:?} reached the wrong handler"
            )),
        };
        ready(reply)
    }

    /// SUBSCRIBE and UNSUBSCRIBE.
    pub(super) fn subscription_command(
        &mut self,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        let reply = match command {
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
            other => Reply::error(format!(
                "internal error: {other:?} reached the wrong handler"
            )),
        };
        ready(reply)
    }

    pub(super) fn maint_enter(
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
        let limit = self.env.settings.maintenance_probe_limit;
        self.commit_ops(ctx, ops, move |_, _| {
            let urls: Vec<_> = backend.into_iter().collect();
            follow_up_probe(urls, limit, target, "maintenance page")
        })
    }

    pub(super) fn maint_exit(
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
        let limit = self.env.settings.maintenance_probe_limit;
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
                    json!({"session_id": act.presented_id(), "completed_at": rfc3339(drain.ends_at())}),
                );
            }
        }));
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
