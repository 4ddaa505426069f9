//! Typed commands of the registry protocol, as the parser produces them.

use std::fmt;
use std::time::Duration;

pub use portico_proto::settings::{BreakerSpec, HealthCheck, OptionKey, OptionValue, RateLimit};
use portico_proto::BackendUrl;
use serde_json::{Map, Value};

/// A parsed line: the optional transaction id, the session it names (every
/// command but REGISTER names one) and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub txn: Option<String>,
    pub session: Option<String>,
    /// The command's name as the protocol spells it.
    pub name: &'static str,
    pub command: Command,
}

/// A route id such as `r12`; unique across the control plane, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId(pub u64);

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// `ALL` (every route of the session) or one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    All,
    Route(RouteId),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteInput {
    pub domains: Vec<String>,
    pub path: String,
    pub backend: BackendUrl,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteField {
    BackendUrl(BackendUrl),
    Priority(i64),
    Domains(Vec<String>),
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintTarget {
    All,
    Routes(Vec<RouteId>),
    Path(String),
    Domain(String),
}

impl fmt::Display for MaintTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaintTarget::All => f.write_str("ALL"),
            MaintTarget::Routes(ids) => {
                let ids: Vec<String> = ids.iter().map(RouteId::to_string).collect();
                f.write_str(&ids.join(","))
            }
            MaintTarget::Path(p) => f.write_str(p),
            MaintTarget::Domain(d) => f.write_str(d),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    BackendHealthChanged,
    GlobalConfigChanged,
    CertRenewed,
    DrainCompleted,
    CircuitBreakerChanged,
    GeoBlocked,
    All,
}

impl EventType {
    pub const EVERY: [EventType; 7] = [
        EventType::BackendHealthChanged,
        EventType::GlobalConfigChanged,
        EventType::CertRenewed,
        EventType::DrainCompleted,
        EventType::CircuitBreakerChanged,
        EventType::GeoBlocked,
        EventType::All,
    ];

    /// The type with this name, in any case.
    pub fn from_name(raw: &str) -> Option<EventType> {
        Self::EVERY
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(raw))
    }

    /// When the event is sent and the fields of its JSON payload, for
    /// `docs/reference/events.md`; `emit` checks payloads against them.
    pub fn doc(self) -> (&'static str, &'static [&'static str]) {
        match self {
            EventType::BackendHealthChanged => (
                "a data plane's probe of one of the session's backends changed its mind (told once per change)",
                &["route_id", "backend", "healthy", "reason"],
            ),
            EventType::GlobalConfigChanged => (
                "another session committed, or a certificate changed",
                &["version"],
            ),
            EventType::CertRenewed => (
                "a certificate covering a host of one of the session's active routes was installed or replaced, once every data plane serves it; `source` is `file` or `acme`",
                &["domains", "not_after", "source"],
            ),
            EventType::DrainCompleted => (
                "the session's drain ramp (DRAIN_START) reached its end",
                &["session_id", "completed_at"],
            ),
            EventType::CircuitBreakerChanged => (
                "a breaker of one of the session's routes changed state on a data plane; `state` is `closed`, `open` or `half_open`",
                &["route_id", "backend", "node_id", "state", "failures"],
            ),
            EventType::GeoBlocked => (
                "a data plane refused requests to one of the session's routes by country (`geo_allow`, `geo_deny`); at most one a second per route and data plane, with how many since the last",
                &["route_id", "country", "count", "node_id"],
            ),
            EventType::All => ("subscribes to every type above", &[]),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::BackendHealthChanged => "backend_health_changed",
            EventType::GlobalConfigChanged => "global_config_changed",
            EventType::CertRenewed => "cert_renewed",
            EventType::DrainCompleted => "drain_completed",
            EventType::CircuitBreakerChanged => "circuit_breaker_changed",
            EventType::GeoBlocked => "geo_blocked",
            EventType::All => "all",
        }
    }
}

/// Which parts of the staged configuration CONFIG_APPLY_PARTIAL applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub routes: bool,
    pub headers: bool,
    pub options: bool,
    pub health: bool,
    pub ratelimit: bool,
    pub circuit_breaker: bool,
}

impl Scopes {
    pub const EVERYTHING: Scopes = Scopes {
        routes: true,
        headers: true,
        options: true,
        health: true,
        ratelimit: true,
        circuit_breaker: true,
    };
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Register {
        service: String,
        instance: String,
        maintenance_port: u16,
        metadata: Map<String, Value>,
    },
    Reconnect,
    Ping,
    SessionInfo,
    ClientShutdown,
    RouteAdd(RouteInput),
    RouteAddBulk(Vec<RouteInput>),
    RouteUpdate {
        route: RouteId,
        field: RouteField,
    },
    RouteRemove(RouteId),
    RouteList {
        compressed: bool,
    },
    HeadersSet {
        target: Target,
        name: String,
        value: String,
    },
    HeadersRemove {
        target: Target,
        name: String,
    },
    OptionsSet {
        target: Target,
        key: OptionKey,
        value: OptionValue,
    },
    OptionsRemove {
        target: Target,
        key: OptionKey,
    },
    HealthSet {
        route: RouteId,
        spec: HealthCheck,
    },
    RateLimitSet {
        target: Target,
        spec: RateLimit,
    },
    CircuitBreakerSet {
        target: Target,
        spec: BreakerSpec,
    },
    CircuitBreakerStatus(RouteId),
    CircuitBreakerReset(RouteId),
    ConfigValidate,
    ConfigApply,
    ConfigRollback,
    ConfigDiff,
    ConfigApplyPartial(Scopes),
    StatsGet {
        target: Target,
        compressed: bool,
    },
    BackendTest(BackendUrl),
    DrainStart(Duration),
    DrainStatus,
    DrainCancel,
    MaintEnter {
        target: MaintTarget,
        backend: Option<BackendUrl>,
    },
    MaintExit(MaintTarget),
    MaintStatus,
    Subscribe(EventType),
    Unsubscribe(EventType),
}
