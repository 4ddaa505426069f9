//! What each protocol command does to a session, by family: `execute`
//! dispatches; routes, settings and applies are here, the operational
//! commands in `operations.rs`, the actor's plumbing in `actor.rs`.

use std::time::SystemTime;

use actix::prelude::*;
use serde_json::json;

use super::actor::{ready, Answer, SessionActor};
use super::guard::{Guard, Standing};
use super::state::SessionState;
use crate::protocol::payload::json_reply;
use crate::protocol::{Command, Reply, ReplyCode, RouteId, Scopes, Target};
use portico_proto::time::rfc3339;

impl SessionActor {
    /// Runs one command, by family; the answer may come later (applies,
    /// probes, data-plane round trips).
    pub(super) fn execute(
        &mut self,
        command: Command,
        conn: super::actor::Home,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        if let Err(why) = self.guard(&command) {
            return ready(Reply::error(why));
        }
        use Command as C;
        match command {
            C::Register { .. } => ready(Reply::error("internal error: REGISTER reached a session")),
            C::Reconnect => ready(self.reconnect(conn)),
            C::Ping => ready(Reply::code(ReplyCode::Pong)),
            C::SessionInfo => ready(self.session_info()),
            C::ClientShutdown => self.end("client shutdown", ctx),
            c @ (C::RouteAdd(_)
            | C::RouteAddBulk(_)
            | C::RouteUpdate { .. }
            | C::RouteRemove(_)
            | C::RouteList { .. }) => ready(self.route_command(c, ctx)),
            c @ (C::HeadersSet { .. }
            | C::HeadersRemove { .. }
            | C::OptionsSet { .. }
            | C::OptionsRemove { .. }
            | C::HealthSet { .. }
            | C::RateLimitSet { .. }
            | C::CircuitBreakerSet { .. }) => ready(self.settings_command(c, ctx)),
            c @ (C::ConfigValidate
            | C::ConfigApply
            | C::ConfigApplyPartial(_)
            | C::ConfigRollback
            | C::ConfigDiff) => self.config_command(c, ctx),
            c @ (C::CircuitBreakerStatus(_)
            | C::CircuitBreakerReset(_)
            | C::StatsGet { .. }
            | C::BackendTest(_)) => self.telemetry_command(c),
            c @ (C::DrainStart(_) | C::DrainStatus | C::DrainCancel) => self.drain_command(c, ctx),
            c @ (C::MaintEnter { .. } | C::MaintExit(_) | C::MaintStatus) => {
                self.maint_command(c, ctx)
            }
            c @ (C::Subscribe(_) | C::Unsubscribe(_)) => self.subscription_command(c, ctx),
        }
    }

    fn reconnect(&mut self, conn: super::actor::Home) -> Reply {
        if self.home.is_none() {
            self.env.metrics.detached(false);
        }
        self.home = Some(conn);
        self.home_closed_at = None;
        self.forget_restore_grace();
        Reply::ok()
    }

    /// ROUTE_*: staged route changes and the list.
    fn route_command(&mut self, command: Command, ctx: &mut Context<Self>) -> Reply {
        let route_ids = &self.env.route_ids;
        match command {
            Command::RouteAdd(input) => {
                match self.state.add_route_with(input, || route_ids.allocate()) {
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
                    .map(|input| self.state.add_route_with(input, || route_ids.allocate()))
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

            other => Reply::error(format!(
                "internal error: {other:?} reached the wrong handler"
            )),
        }
    }

    /// HEADERS_*, OPTIONS_*, HEALTH_SET, RATELIMIT_SET, CIRCUIT_BREAKER_SET:
    /// staged settings, checked against the session's routes.
    fn settings_command(&mut self, command: Command, ctx: &mut Context<Self>) -> Reply {
        match command {
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
            other => Reply::error(format!(
                "internal error: {other:?} reached the wrong handler"
            )),
        }
    }

    /// CONFIG_*: validate, apply (whole or partial), roll back, diff.
    fn config_command(
        &mut self,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> actix::ResponseFuture<Answer> {
        let reply = match command {
            Command::ConfigValidate => return self.apply(Scopes::EVERYTHING, true, ctx),
            Command::ConfigApply => return self.apply(Scopes::EVERYTHING, false, ctx),
            Command::ConfigApplyPartial(scopes) => return self.apply(scopes, false, ctx),
            Command::ConfigRollback => {
                self.state.rollback();
                Reply::ok()
            }
            Command::ConfigDiff => json_reply(ReplyCode::DiffOk, &self.state.diff_json(), false),

            other => Reply::error(format!(
                "internal error: {other:?} reached the wrong handler"
            )),
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

    /// Checks a command against the backend policy and the session's grant.
    fn guard(&self, command: &Command) -> Result<(), String> {
        let settings = &self.env.settings;
        let tokens = self.env.auth.as_ref().map(|auth| auth.tokens());
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
                "session_id": self.presented_id(),
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
