//! What the proxy reads per request from a route's settings, derived once
//! per table build: parsed response headers, and the data plane's defaults
//! for what a route leaves unset. The settings themselves are typed in proto.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use portico_proto::ip_set::IpSet;
use portico_proto::settings::OptionValue;
use portico_proto::settings::{
    BreakerSpec, HealthCheck, OptionKey, RateLimit, RouteSettings, DEFAULT_PROBE_INTERVAL,
    DEFAULT_PROBE_TIMEOUT,
};

/// A response header this data plane cannot send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid header name \"{0}\"")]
    HeaderName(String),
    #[error("invalid value for header {0}")]
    HeaderValue(String),
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub retries: u8,
    pub websocket: bool,
    pub compression: bool,
    pub http2: bool,
    /// Plain-HTTP requests are answered 308 to https.
    pub https_redirect: bool,
    pub rate_limit: Option<RateLimit>,
    pub breaker: Option<BreakerSpec>,
    pub probe: HealthCheck,
    /// The route's own `pii_*` options.
    pub pii: crate::observe::pii::Pii,
    /// `ip_allow` and `ip_deny`; an empty list is none.
    pub ip_allow: Option<IpSet>,
    pub ip_deny: Option<IpSet>,
    /// `ratelimit_exempt`.
    pub ratelimit_exempt: Option<IpSet>,
    /// `geo_allow`, `geo_deny` (country codes) and `geo_unknown`.
    pub geo_allow: Option<portico_proto::settings::Names>,
    pub geo_deny: Option<portico_proto::settings::Names>,
    pub geo_unknown_allowed: bool,
    /// `strip_prefix`, `add_prefix` and `preserve_host` (on by default).
    pub strip_prefix: bool,
    pub add_prefix: Option<std::sync::Arc<str>>,
    pub preserve_host: bool,
}

impl Policy {
    pub fn new(settings: &RouteSettings) -> Result<Policy, PolicyError> {
        let headers = response_headers(
            settings
                .response_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        )?;
        // HEALTH_SET replaces the probe; the options only move the defaults.
        let probe = settings.health.clone().unwrap_or_else(|| HealthCheck {
            path: "/".into(),
            interval: settings
                .duration(OptionKey::HealthCheckInterval)
                .unwrap_or(DEFAULT_PROBE_INTERVAL),
            timeout: settings
                .duration(OptionKey::HealthCheckTimeout)
                .unwrap_or(DEFAULT_PROBE_TIMEOUT),
        });
        Ok(Policy {
            headers,
            timeout: settings.duration(OptionKey::Timeout),
            connect_timeout: settings.duration(OptionKey::ConnectTimeout),
            retries: settings.retries(),
            websocket: settings.flag(OptionKey::Websocket),
            compression: settings.flag(OptionKey::Compression),
            http2: settings.flag(OptionKey::Http2),
            https_redirect: settings.flag(OptionKey::HttpsRedirect),
            rate_limit: settings.rate_limit,
            breaker: settings.circuit_breaker,
            probe,
            pii: crate::observe::pii::Pii::of(&settings.options),
            ip_allow: nets(settings, OptionKey::IpAllow),
            ip_deny: nets(settings, OptionKey::IpDeny),
            ratelimit_exempt: nets(settings, OptionKey::RatelimitExempt),
            geo_allow: names(settings, OptionKey::GeoAllow),
            geo_deny: names(settings, OptionKey::GeoDeny),
            strip_prefix: settings.flag(OptionKey::StripPrefix),
            add_prefix: match settings.options.get(&OptionKey::AddPrefix) {
                Some(OptionValue::Path(p)) if !p.is_empty() => Some(p.clone()),
                _ => None,
            },
            preserve_host: !matches!(
                settings.options.get(&OptionKey::PreserveHost),
                Some(OptionValue::Bool(false))
            ),
            geo_unknown_allowed: !matches!(
                settings.options.get(&OptionKey::GeoUnknown),
                Some(OptionValue::Word("deny"))
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_proto::settings::OptionValue;

    #[test]
    fn settings_become_the_policy_with_defaults_for_what_is_unset() {
        let mut settings = RouteSettings {
            response_headers: vec![("X-A".into(), "1".into())],
            ..Default::default()
        };
        for (key, value) in [
            (
                OptionKey::Timeout,
                OptionValue::Duration(Duration::from_millis(1500)),
            ),
            (OptionKey::Retries, OptionValue::Count(2)),
            (
                OptionKey::HealthCheckInterval,
                OptionValue::Duration(Duration::from_secs(2)),
            ),
        ] {
            settings.options.insert(key, value);
        }
        let p = Policy::new(&settings).unwrap();
        assert_eq!(p.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(p.retries, 2);
        assert_eq!(p.probe.interval, Duration::from_secs(2));
        assert_eq!(p.probe.timeout, DEFAULT_PROBE_TIMEOUT);
        assert_eq!(p.headers[0].0.as_str(), "x-a");
        let bad = RouteSettings {
            response_headers: vec![("bad name".into(), "1".into())],
            ..Default::default()
        };
        assert_eq!(
            Policy::new(&bad).unwrap_err().to_string(),
            "invalid header name \"bad name\""
        );
    }
}

/// What the global site file sets for every route (`v1::Defaults`).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Added to a route's responses unless the route sets the same name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Requests no route serves are counted, not access-logged.
    pub unrouted_metrics_only: bool,
}

impl Defaults {
    pub fn from_wire(wire: &portico_proto::v1::Defaults) -> Result<Defaults, PolicyError> {
        let headers = response_headers(
            wire.response_headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str())),
        )?;
        Ok(Defaults {
            headers,
            unrouted_metrics_only: wire.unrouted_metrics_only,
        })
    }
}

fn response_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, PolicyError> {
    headers
        .map(|(name, value)| {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PolicyError::HeaderName(name.to_string()))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| PolicyError::HeaderValue(name.to_string()))?;
            Ok((n, v))
        })
        .collect()
}

/// A network list option, when set and not empty.
fn nets(settings: &RouteSettings, key: OptionKey) -> Option<IpSet> {
    match settings.options.get(&key) {
        Some(OptionValue::Nets(set)) if !set.is_empty() => Some(set.clone()),
        _ => None,
    }
}

/// A names option (country codes), when set and not empty.
fn names(settings: &RouteSettings, key: OptionKey) -> Option<portico_proto::settings::Names> {
    match settings.options.get(&key) {
        Some(OptionValue::Names(n)) if !n.is_empty() => Some(n.clone()),
        _ => None,
    }
}
