//! A session to and from its stored record (`store::SessionRecord`):
//! identity, active routes, active settings and operational state. Staged
//! changes are not kept.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use portico_proto::time::{from_unix_ms as time_of, unix_ms};
use portico_proto::{BackendUrl, RouteSpec};

use super::settings::Settings;
use super::state::{Drain, Identity, Ops, Proposal, SessionState};
use crate::protocol::{
    BreakerSpec, EventType, HealthCheck, OptionKey, RateLimit, RouteId, RouteInput, Target,
};
use crate::registry::auth::TokenHash;
use crate::store::{RouteRecord, SessionRecord, TargetRecord};

fn target_record(t: &Target) -> TargetRecord {
    match t {
        Target::All => None,
        Target::Route(id) => Some(id.0),
    }
}

fn target_of(t: TargetRecord) -> Target {
    t.map_or(Target::All, |n| Target::Route(RouteId(n)))
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Why a stored session cannot be restored.
#[derive(Debug, thiserror::Error)]
#[error("session {id}: {reason}")]
pub struct RecordError {
    pub id: String,
    pub reason: String,
}

impl SessionRecord {
    /// The record kept by its session's key: one written before stores
    /// held keys holds the id itself, which is hashed here.
    pub fn keyed(mut self) -> SessionRecord {
        if !super::key::is_key(&self.id) {
            self.id = super::key::session_key(&self.id);
        }
        self
    }

    /// The public handle of the session it keeps.
    pub fn handle(&self) -> String {
        super::key::handle(&self.instance, &self.id)
    }

    /// The active part of a session, with `ops` as its operational state.
    pub fn of(
        state: &SessionState,
        routes: &BTreeMap<RouteId, RouteInput>,
        settings: &Settings,
        ops: &Ops,
    ) -> Self {
        let id = &state.identity;
        let s = settings;
        SessionRecord {
            id: id.id.clone(),
            service: id.service.clone(),
            instance: id.instance.clone(),
            maintenance_port: id.maintenance_port,
            metadata: id.metadata.clone(),
            peer_ip: id.peer_ip.map(|ip| ip.to_string()),
            connected_at_ms: unix_ms(id.connected_at),
            token_sha256: id.token.map(TokenHash::to_hex),
            last_apply_ms: state.last_apply.map(unix_ms),
            replica: String::new(),
            subscriptions: Self::subscription_names(&state.subscriptions),
            routes: routes
                .iter()
                .map(|(rid, r)| RouteRecord {
                    id: rid.0,
                    domains: r.domains.clone(),
                    path: r.path.clone(),
                    backend_url: r.backend.to_string(),
                    priority: r.priority,
                })
                .collect(),
            headers: s
                .headers
                .active
                .iter()
                .flat_map(|(t, m)| {
                    m.values()
                        .map(move |(n, v)| (target_record(t), n.clone(), v.clone()))
                })
                .collect(),
            options: s
                .options
                .active
                .iter()
                .flat_map(|(t, m)| {
                    m.iter().map(move |(k, v)| {
                        (target_record(t), k.as_str().to_string(), v.to_string())
                    })
                })
                .collect(),
            health: s
                .health
                .active
                .iter()
                .map(|(rid, h)| (rid.0, h.path.clone(), ms(h.interval), ms(h.timeout)))
                .collect(),
            ratelimit: s
                .ratelimit
                .active
                .iter()
                .map(|(t, r)| (target_record(t), r.requests, ms(r.window)))
                .collect(),
            breaker: s
                .breaker
                .active
                .iter()
                .map(|(t, b)| {
                    (
                        target_record(t),
                        b.threshold,
                        ms(b.timeout),
                        b.half_open_requests,
                    )
                })
                .collect(),
            maintenance: ops
                .maintenance
                .iter()
                .map(|(rid, at)| (rid.0, unix_ms(*at)))
                .collect(),
            maintenance_backend: ops.maintenance_backend.as_ref().map(|b| b.to_string()),
            drain: ops.drain.map(|d| (unix_ms(d.started_at), ms(d.duration))),
        }
    }

    /// Event types by name, as a record keeps them.
    pub fn subscription_names(events: &BTreeSet<EventType>) -> Vec<String> {
        events.iter().map(|e| e.as_str().to_string()).collect()
    }

    /// Its active routes as the data planes get them.
    pub fn active_routes(&self) -> Result<Vec<RouteSpec>, RecordError> {
        let state = self.restore()?;
        Ok(state.active_specs(&state.ops))
    }

    /// The session this record describes, with nothing staged.
    pub fn restore(&self) -> Result<SessionState, RecordError> {
        let fail = |reason: String| RecordError {
            id: self.id.clone(),
            reason,
        };
        let backend = |raw: &str| BackendUrl::parse(raw).map_err(|e| fail(e.to_string()));
        let mut state = SessionState::new(Identity {
            id: self.id.clone(),
            service: self.service.clone(),
            instance: self.instance.clone(),
            maintenance_port: self.maintenance_port,
            metadata: self.metadata.clone(),
            peer_ip: self.peer_ip.as_deref().and_then(|ip| ip.parse().ok()),
            connected_at: time_of(self.connected_at_ms),
            token: self.token_sha256.as_deref().and_then(TokenHash::from_hex),
        });
        let mut routes = BTreeMap::new();
        for r in &self.routes {
            let input = RouteInput {
                domains: r.domains.clone(),
                path: r.path.clone(),
                backend: backend(&r.backend_url)?,
                priority: r.priority,
            };
            routes.insert(RouteId(r.id), input);
        }
        let mut settings = Settings::default();
        for (t, name, value) in &self.headers {
            settings
                .headers
                .active
                .entry(target_of(*t))
                .or_default()
                .insert(name.to_ascii_lowercase(), (name.clone(), value.clone()));
        }
        for (t, key, value) in &self.options {
            let key = OptionKey::from_name(key).map_err(|e| fail(e.to_string()))?;
            let value = key
                .parse_canonical(value)
                .map_err(|e| fail(e.to_string()))?;
            settings
                .options
                .active
                .entry(target_of(*t))
                .or_default()
                .insert(key, value);
        }
        for (rid, path, interval, timeout) in &self.health {
            settings.health.active.insert(
                RouteId(*rid),
                HealthCheck {
                    path: path.clone(),
                    interval: Duration::from_millis(*interval),
                    timeout: Duration::from_millis(*timeout),
                },
            );
        }
        for (t, requests, window) in &self.ratelimit {
            settings.ratelimit.active.insert(
                target_of(*t),
                RateLimit {
                    requests: *requests,
                    window: Duration::from_millis(*window),
                },
            );
        }
        for (t, threshold, timeout, half_open) in &self.breaker {
            settings.breaker.active.insert(
                target_of(*t),
                BreakerSpec {
                    threshold: *threshold,
                    timeout: Duration::from_millis(*timeout),
                    half_open_requests: *half_open,
                },
            );
        }
        let ops = Ops {
            maintenance: self
                .maintenance
                .iter()
                .map(|(rid, at)| (RouteId(*rid), time_of(*at)))
                .collect(),
            maintenance_backend: self
                .maintenance_backend
                .as_deref()
                .map(backend)
                .transpose()?,
            drain: self.drain.map(|(started, duration)| Drain {
                started_at: time_of(started),
                duration: Duration::from_millis(duration),
            }),
        };
        state.subscriptions = self
            .subscriptions
            .iter()
            .map(|name| {
                EventType::from_name(name).ok_or_else(|| fail(format!("unknown event type {name}")))
            })
            .collect::<Result<_, _>>()?;
        state.restore_active(routes, settings, ops, self.last_apply_ms.map(time_of));
        Ok(state)
    }
}

impl SessionState {
    /// The durable record of the active state.
    pub fn record(&self) -> SessionRecord {
        SessionRecord::of(self, self.active(), &self.settings, &self.ops)
    }

    /// The record with `ops` in place of the current operational state.
    pub fn record_with(&self, ops: &Ops) -> SessionRecord {
        SessionRecord::of(self, self.active(), &self.settings, ops)
    }

    /// The record as it will be once `proposal` commits at `at`, with `ops`.
    pub fn record_after(&self, proposal: &Proposal, ops: &Ops, at: SystemTime) -> SessionRecord {
        let mut record = SessionRecord::of(self, &proposal.routes, &proposal.settings, ops);
        record.last_apply_ms = Some(unix_ms(at));
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{OptionValue, Scopes};
    use serde_json::Map;

    #[test]
    fn a_session_survives_a_round_trip() {
        let mut s = SessionState::new(Identity {
            id: "web-1-abc".into(),
            service: "web".into(),
            instance: "web-1".into(),
            maintenance_port: 9000,
            metadata: Map::new(),
            peer_ip: Some("127.0.0.1".parse().unwrap()),
            connected_at: time_of(1_700_000_000_000),
            token: Some(TokenHash::of("a token of the test")),
        });
        let r1 = s.add_route(
            RouteInput {
                domains: vec!["a.com".into()],
                path: "/api".into(),
                backend: BackendUrl::parse("https://b:8443").unwrap(),
                priority: 3,
            },
            || RouteId(7),
        );
        s.settings
            .headers
            .edit()
            .entry(Target::All)
            .or_default()
            .insert("x-a".into(), ("X-A".into(), "1".into()));
        s.settings
            .options
            .edit()
            .entry(Target::Route(r1))
            .or_default()
            .insert(
                OptionKey::Timeout,
                OptionValue::Duration(Duration::from_secs(3)),
            );
        s.settings
            .options
            .edit()
            .entry(Target::All)
            .or_default()
            .insert(OptionKey::Websocket, OptionValue::Bool(true));
        s.settings.breaker.edit().insert(
            Target::All,
            BreakerSpec {
                threshold: 5,
                timeout: Duration::from_secs(30),
                half_open_requests: 2,
            },
        );
        s.commit(
            s.propose(Scopes::EVERYTHING).unwrap(),
            time_of(1_700_000_001_000),
        );
        s.ops.drain = Some(Drain {
            started_at: time_of(1_700_000_002_000),
            duration: Duration::from_secs(60),
        });
        s.ops.maintenance.insert(r1, time_of(1_700_000_003_000));
        s.subscriptions
            .extend([EventType::DrainCompleted, EventType::GlobalConfigChanged]);
        let record = s.record();
        let json = serde_json::to_string(&record).unwrap();
        let back: SessionRecord = serde_json::from_str(&json).unwrap();
        let restored = back.restore().unwrap();
        assert_eq!(restored.record(), record);
        assert_eq!(restored.subscriptions, s.subscriptions);
        assert_eq!(restored.list_json(), s.list_json());
        assert_eq!(restored.settings.resolve(r1), s.settings.resolve(r1));
    }

    #[test]
    fn a_record_with_an_unknown_event_type_is_refused_by_name() {
        let mut record = SessionState::new(Identity {
            id: "web-1-abc".into(),
            service: "web".into(),
            instance: "web-1".into(),
            maintenance_port: 0,
            metadata: Map::new(),
            peer_ip: None,
            connected_at: time_of(1),
            token: None,
        })
        .record();
        record.subscriptions = vec!["weather".into()];
        let err = record.restore().err().unwrap();
        assert_eq!(
            err.to_string(),
            "session web-1-abc: unknown event type weather"
        );
    }
}
