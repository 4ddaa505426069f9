//! Route settings, typed once for both planes: the options with their names
//! and rules, health check, rate limit, circuit breaker, drain and
//! maintenance; one conversion from the wire and a lossless one back.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::duration::parse_duration;
use crate::ip_set::IpSet;
use crate::model::BackendUrl;
use crate::option_values::{clip, countries, path_prefix};
pub use crate::option_values::{Names, FEATURE_GEOIP, GEO_UNKNOWN, PII_IP};
use crate::time::{from_unix_ms, unix_ms};
use crate::v1;

/// Why a setting was refused. Messages go to services verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("unknown option \"{0}\"")]
    UnknownOption(String),
    #[error("invalid value \"{value}\" for option {key}: {reason}")]
    OptionValue {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0} must be positive")]
    NotPositive(&'static str),
}

/// Most retries a route may ask for.
pub const MAX_RETRIES: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OptionKey {
    Timeout,
    ConnectTimeout,
    Websocket,
    Compression,
    Http2,
    Retries,
    HealthCheckInterval,
    HealthCheckTimeout,
    HttpsRedirect,
    IpAllow,
    IpDeny,
    PiiIp,
    PiiStripHeaders,
    PiiMaskQuery,
    PiiPreservePrivate,
    RatelimitExempt,
    GeoAllow,
    GeoDeny,
    GeoUnknown,
    StripPrefix,
    AddPrefix,
    PreserveHost,
}

/// Without HEALTH_SET (and without health_check_* options) a data plane
/// probes `GET /` every 30 s with a 5 s timeout.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A typed option value; its canonical text (`<n>ms`, `true`, `3`) is what
/// travels to data planes and is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OptionValue {
    Duration(Duration),
    Bool(bool),
    Count(u8),
    /// CIDRs and addresses, comma-separated in canonical text.
    Nets(IpSet),
    /// One of the words the option allows (`pii_ip`).
    Word(&'static str),
    /// Names, lower-case, sorted and comma-separated in canonical text.
    Names(Names),
    /// A URL path (`add_prefix`), without a trailing `/`.
    Path(std::sync::Arc<str>),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Duration(d) => write!(f, "{}ms", d.as_millis()),
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Count(n) => write!(f, "{n}"),
            OptionValue::Nets(set) => write!(f, "{set}"),
            OptionValue::Word(w) => f.write_str(w),
            OptionValue::Names(names) => write!(f, "{names}"),
            OptionValue::Path(path) => f.write_str(path),
        }
    }
}

impl OptionKey {
    pub const ALL: [OptionKey; 22] = [
        OptionKey::Timeout,
        OptionKey::ConnectTimeout,
        OptionKey::Websocket,
        OptionKey::Compression,
        OptionKey::Http2,
        OptionKey::Retries,
        OptionKey::HealthCheckInterval,
        OptionKey::HealthCheckTimeout,
        OptionKey::HttpsRedirect,
        OptionKey::IpAllow,
        OptionKey::IpDeny,
        OptionKey::PiiIp,
        OptionKey::PiiStripHeaders,
        OptionKey::PiiMaskQuery,
        OptionKey::PiiPreservePrivate,
        OptionKey::RatelimitExempt,
        OptionKey::GeoAllow,
        OptionKey::GeoDeny,
        OptionKey::GeoUnknown,
        OptionKey::StripPrefix,
        OptionKey::AddPrefix,
        OptionKey::PreserveHost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OptionKey::Timeout => "timeout",
            OptionKey::ConnectTimeout => "connect_timeout",
            OptionKey::Websocket => "websocket",
            OptionKey::Compression => "compression",
            OptionKey::Http2 => "http2",
            OptionKey::Retries => "retries",
            OptionKey::HealthCheckInterval => "health_check_interval",
            OptionKey::HealthCheckTimeout => "health_check_timeout",
            OptionKey::HttpsRedirect => "https_redirect",
            OptionKey::IpAllow => "ip_allow",
            OptionKey::IpDeny => "ip_deny",
            OptionKey::PiiIp => "pii_ip",
            OptionKey::PiiStripHeaders => "pii_strip_headers",
            OptionKey::PiiMaskQuery => "pii_mask_query",
            OptionKey::PiiPreservePrivate => "pii_preserve_private",
            OptionKey::RatelimitExempt => "ratelimit_exempt",
            OptionKey::GeoAllow => "geo_allow",
            OptionKey::GeoDeny => "geo_deny",
            OptionKey::GeoUnknown => "geo_unknown",
            OptionKey::StripPrefix => "strip_prefix",
            OptionKey::AddPrefix => "add_prefix",
            OptionKey::PreserveHost => "preserve_host",
        }
    }

    /// The key named `raw`, in any case.
    pub fn from_name(raw: &str) -> Result<OptionKey, SettingsError> {
        OptionKey::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(raw))
            .ok_or_else(|| SettingsError::UnknownOption(clip(raw)))
    }

    fn invalid(self, raw: &str, reason: impl Into<String>) -> SettingsError {
        SettingsError::OptionValue {
            key: self.as_str(),
            value: clip(raw),
            reason: reason.into(),
        }
    }

    /// A value as a service writes it (OPTIONS_SET): a protocol duration
    /// (`30s`, `500ms`), a boolean (`true`, `off`, …) or retries 0-5.
    pub fn parse_value(self, raw: &str) -> Result<OptionValue, SettingsError> {
        match self {
            OptionKey::Timeout
            | OptionKey::ConnectTimeout
            | OptionKey::HealthCheckInterval
            | OptionKey::HealthCheckTimeout => parse_duration(raw)
                .map(OptionValue::Duration)
                .map_err(|e| self.invalid(raw, e)),
            OptionKey::Websocket
            | OptionKey::Compression
            | OptionKey::Http2
            | OptionKey::HttpsRedirect
            | OptionKey::PiiPreservePrivate
            | OptionKey::StripPrefix
            | OptionKey::PreserveHost => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(OptionValue::Bool(true)),
                "false" | "0" | "no" | "off" => Ok(OptionValue::Bool(false)),
                _ => Err(self.invalid(raw, "must be true or false")),
            },
            OptionKey::Retries => raw
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= MAX_RETRIES)
                .map(OptionValue::Count)
                .ok_or_else(|| self.invalid(raw, "must be an integer from 0 to 5")),
            OptionKey::IpAllow | OptionKey::IpDeny | OptionKey::RatelimitExempt => {
                IpSet::parse(raw)
                    .map(OptionValue::Nets)
                    .map_err(|e| self.invalid(raw, e))
            }
            OptionKey::GeoAllow | OptionKey::GeoDeny => countries(raw)
                .map(OptionValue::Names)
                .map_err(|e| self.invalid(raw, e)),
            OptionKey::AddPrefix => path_prefix(raw)
                .map(OptionValue::Path)
                .map_err(|e| self.invalid(raw, e)),
            OptionKey::GeoUnknown => GEO_UNKNOWN
                .into_iter()
                .find(|w| w.eq_ignore_ascii_case(raw.trim()))
                .map(OptionValue::Word)
                .ok_or_else(|| self.invalid(raw, "must be allow or deny")),
            OptionKey::PiiIp => PII_IP
                .into_iter()
                .find(|w| w.eq_ignore_ascii_case(raw.trim()))
                .map(OptionValue::Word)
                .ok_or_else(|| self.invalid(raw, "must be none, last_octet, hash or full")),
            OptionKey::PiiStripHeaders | OptionKey::PiiMaskQuery => Names::parse(raw)
                .map(OptionValue::Names)
                .map_err(|e| self.invalid(raw, e)),
        }
    }

    /// A value in its canonical text, as it travels and is stored; held to
    /// the same rules as [`OptionKey::parse_value`].
    pub fn parse_canonical(self, raw: &str) -> Result<OptionValue, SettingsError> {
        let value = match self {
            OptionKey::Timeout
            | OptionKey::ConnectTimeout
            | OptionKey::HealthCheckInterval
            | OptionKey::HealthCheckTimeout => raw
                .strip_suffix("ms")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .map(|n| OptionValue::Duration(Duration::from_millis(n))),
            OptionKey::Websocket
            | OptionKey::Compression
            | OptionKey::Http2
            | OptionKey::HttpsRedirect
            | OptionKey::PiiPreservePrivate
            | OptionKey::StripPrefix
            | OptionKey::PreserveHost => raw.parse().ok().map(OptionValue::Bool),
            OptionKey::Retries => raw
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= MAX_RETRIES)
                .map(OptionValue::Count),
            OptionKey::IpAllow | OptionKey::IpDeny | OptionKey::RatelimitExempt => {
                IpSet::parse(raw)
                    .ok()
                    .filter(|set| set.to_string() == raw)
                    .map(OptionValue::Nets)
            }
            OptionKey::PiiIp => PII_IP
                .into_iter()
                .find(|w| *w == raw)
                .map(OptionValue::Word),
            OptionKey::GeoUnknown => GEO_UNKNOWN
                .into_iter()
                .find(|w| *w == raw)
                .map(OptionValue::Word),
            OptionKey::GeoAllow | OptionKey::GeoDeny => countries(raw)
                .ok()
                .filter(|names| names.to_string() == raw)
                .map(OptionValue::Names),
            OptionKey::AddPrefix => path_prefix(raw)
                .ok()
                .filter(|p| &**p == raw)
                .map(OptionValue::Path),
            OptionKey::PiiStripHeaders | OptionKey::PiiMaskQuery => Names::parse(raw)
                .ok()
                .filter(|names| names.to_string() == raw)
                .map(OptionValue::Names),
        };
        value.ok_or_else(|| self.invalid(raw, "not in canonical form"))
    }
}

/// `HEALTH_SET`: `GET path` every `interval`, failing after `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// At most `requests` per client IP in each `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests: u64,
    pub window: Duration,
}

/// `threshold` consecutive failures open the breaker; after `timeout`,
/// `half_open_requests` trials decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BreakerSpec {
    pub threshold: u32,
    pub timeout: Duration,
    pub half_open_requests: u32,
}

/// Where a circuit breaker is, from the least to the most severe; its name
/// is what travels (`BreakerState.state`) and what services read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BreakerPhase {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerPhase::Closed => "closed",
            BreakerPhase::HalfOpen => "half_open",
            BreakerPhase::Open => "open",
        }
    }

    /// The phase named `raw`; an unknown name counts as closed.
    pub fn from_name(raw: &str) -> BreakerPhase {
        match raw {
            "open" => BreakerPhase::Open,
            "half_open" => BreakerPhase::HalfOpen,
            _ => BreakerPhase::Closed,
        }
    }
}

/// A drain: the session's backends ramp from full weight to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub started_at: SystemTime,
    pub duration: Duration,
}

impl Drain {
    /// Share of full weight at `now`: 1 at the start, 0 from the end on.
    pub fn weight_at(&self, now: SystemTime) -> f64 {
        let elapsed = now.duration_since(self.started_at).unwrap_or_default();
        (1.0 - elapsed.as_secs_f64() / self.duration.as_secs_f64().max(1e-9)).clamp(0.0, 1.0)
    }

    pub fn ends_at(&self) -> SystemTime {
        self.started_at + self.duration
    }
}

/// A route in maintenance: its traffic goes to `backend`, or to the
/// built-in page when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub backend: Option<BackendUrl>,
    pub entered_at: SystemTime,
}

/// One route's settings, resolved by the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSettings {
    /// (name as given, value), in order.
    pub response_headers: Vec<(String, String)>,
    pub options: BTreeMap<OptionKey, OptionValue>,
    pub health: Option<HealthCheck>,
    pub rate_limit: Option<RateLimit>,
    pub circuit_breaker: Option<BreakerSpec>,
}

impl RouteSettings {
    pub fn duration(&self, key: OptionKey) -> Option<Duration> {
        match self.options.get(&key) {
            Some(OptionValue::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    /// A boolean option; off unless set.
    pub fn flag(&self, key: OptionKey) -> bool {
        matches!(self.options.get(&key), Some(OptionValue::Bool(true)))
    }

    pub fn retries(&self) -> u8 {
        match self.options.get(&OptionKey::Retries) {
            Some(OptionValue::Count(n)) => *n,
            _ => 0,
        }
    }
}

fn positive(d: u64, what: &'static str) -> Result<Duration, SettingsError> {
    (d > 0)
        .then(|| Duration::from_millis(d))
        .ok_or(SettingsError::NotPositive(what))
}

impl TryFrom<&v1::RouteSettings> for RouteSettings {
    type Error = SettingsError;

    fn try_from(s: &v1::RouteSettings) -> Result<Self, SettingsError> {
        let mut options = BTreeMap::new();
        for o in &s.options {
            let key = OptionKey::from_name(&o.key)?;
            options.insert(key, key.parse_canonical(&o.value)?);
        }
        let health = match &s.health {
            None => None,
            Some(h) => Some(HealthCheck {
                path: h.path.clone(),
                interval: positive(h.interval_ms, "health check interval")?,
                timeout: positive(h.timeout_ms, "health check timeout")?,
            }),
        };
        let rate_limit = match &s.rate_limit {
            Some(r) if r.requests == 0 => return Err(SettingsError::NotPositive("rate limit")),
            Some(r) => Some(RateLimit {
                requests: r.requests,
                window: positive(r.window_ms, "rate limit")?,
            }),
            None => None,
        };
        let circuit_breaker = match &s.circuit_breaker {
            Some(b) if b.threshold == 0 || b.half_open_requests == 0 => {
                return Err(SettingsError::NotPositive("circuit breaker settings"))
            }
            Some(b) => Some(BreakerSpec {
                threshold: b.threshold,
                timeout: positive(b.timeout_ms, "circuit breaker settings")?,
                half_open_requests: b.half_open_requests,
            }),
            None => None,
        };
        Ok(RouteSettings {
            response_headers: s
                .response_headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            options,
            health,
            rate_limit,
            circuit_breaker,
        })
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl From<&RouteSettings> for v1::RouteSettings {
    fn from(s: &RouteSettings) -> v1::RouteSettings {
        v1::RouteSettings {
            response_headers: s
                .response_headers
                .iter()
                .map(|(name, value)| v1::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            options: s
                .options
                .iter()
                .map(|(k, v)| v1::Option {
                    key: k.as_str().to_string(),
                    value: v.to_string(),
                })
                .collect(),
            health: s.health.as_ref().map(|h| v1::HealthCheck {
                path: h.path.clone(),
                interval_ms: ms(h.interval),
                timeout_ms: ms(h.timeout),
            }),
            rate_limit: s.rate_limit.map(|r| v1::RateLimit {
                requests: r.requests,
                window_ms: ms(r.window),
            }),
            circuit_breaker: s.circuit_breaker.map(|b| v1::CircuitBreaker {
                threshold: b.threshold,
                timeout_ms: ms(b.timeout),
                half_open_requests: b.half_open_requests,
            }),
        }
    }
}

impl From<&v1::Drain> for Drain {
    fn from(d: &v1::Drain) -> Drain {
        Drain {
            started_at: from_unix_ms(d.started_at_unix_ms),
            duration: Duration::from_millis(d.duration_ms),
        }
    }
}

impl From<&Drain> for v1::Drain {
    fn from(d: &Drain) -> v1::Drain {
        v1::Drain {
            started_at_unix_ms: unix_ms(d.started_at),
            duration_ms: ms(d.duration),
        }
    }
}

impl TryFrom<&v1::Maintenance> for Maintenance {
    type Error = crate::model::ModelError;

    fn try_from(m: &v1::Maintenance) -> Result<Maintenance, Self::Error> {
        Ok(Maintenance {
            backend: match m.backend_url.as_str() {
                "" => None,
                url => Some(BackendUrl::parse(url)?),
            },
            entered_at: from_unix_ms(m.entered_at_unix_ms),
        })
    }
}

impl From<&Maintenance> for v1::Maintenance {
    fn from(m: &Maintenance) -> v1::Maintenance {
        v1::Maintenance {
            backend_url: m
                .backend
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            entered_at_unix_ms: unix_ms(m.entered_at),
        }
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
