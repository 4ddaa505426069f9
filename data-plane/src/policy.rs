//! A route's settings as the proxy uses them, parsed once per table build
//! from the key/value form they travel in.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use portico_proto::v1;

use crate::breaker::BreakerSpec;

/// Without HEALTH_SET (and without health_check_* options): `GET /` every
/// 30 s with a 5 s timeout.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
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
    pub rate_limit: Option<(u64, Duration)>,
    pub breaker: Option<BreakerSpec>,
    pub probe: Probe,
}

fn duration(key: &str, raw: &str) -> Result<Duration, String> {
    raw.strip_suffix("ms")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("option {key}: invalid duration \"{raw}\""))
}

fn flag(key: &str, raw: &str) -> Result<bool, String> {
    raw.parse()
        .map_err(|_| format!("option {key}: invalid bool \"{raw}\""))
}

impl Policy {
    pub fn parse(settings: &v1::RouteSettings) -> Result<Policy, String> {
        let mut policy = Policy {
            headers: Vec::with_capacity(settings.response_headers.len()),
            timeout: None,
            connect_timeout: None,
            retries: 0,
            websocket: false,
            compression: false,
            http2: false,
            rate_limit: None,
            breaker: None,
            probe: Probe {
                path: "/".into(),
                interval: DEFAULT_PROBE_INTERVAL,
                timeout: DEFAULT_PROBE_TIMEOUT,
            },
        };
        for h in &settings.response_headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("invalid header name \"{}\"", h.name))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| format!("invalid value for header {}", h.name))?;
            policy.headers.push((name, value));
        }
        for o in &settings.options {
            let (k, v) = (o.key.as_str(), o.value.as_str());
            match k {
                "timeout" => policy.timeout = Some(duration(k, v)?),
                "connect_timeout" => policy.connect_timeout = Some(duration(k, v)?),
                "health_check_interval" => policy.probe.interval = duration(k, v)?,
                "health_check_timeout" => policy.probe.timeout = duration(k, v)?,
                "websocket" => policy.websocket = flag(k, v)?,
                "compression" => policy.compression = flag(k, v)?,
                "http2" => policy.http2 = flag(k, v)?,
                "retries" => {
                    policy.retries = v
                        .parse()
                        .ok()
                        .filter(|n| *n <= 5)
                        .ok_or(format!("option retries: invalid \"{v}\""))?
                }
                other => return Err(format!("unknown option \"{other}\"")),
            }
        }
        if let Some(h) = &settings.health {
            policy.probe = Probe {
                path: h.path.clone(),
                interval: Duration::from_millis(h.interval_ms.max(1)),
                timeout: Duration::from_millis(h.timeout_ms.max(1)),
            };
        }
        if let Some(r) = &settings.rate_limit {
            if r.requests == 0 || r.window_ms == 0 {
                return Err("rate limit must be positive".into());
            }
            policy.rate_limit = Some((r.requests, Duration::from_millis(r.window_ms)));
        }
        if let Some(b) = &settings.circuit_breaker {
            if b.threshold == 0 || b.half_open_requests == 0 || b.timeout_ms == 0 {
                return Err("circuit breaker settings must be positive".into());
            }
            policy.breaker = Some(BreakerSpec {
                threshold: b.threshold,
                timeout: Duration::from_millis(b.timeout_ms),
                half_open_requests: b.half_open_requests,
            });
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wire_form_and_refuses_bad_values() {
        let settings = v1::RouteSettings {
            response_headers: vec![v1::Header {
                name: "X-A".into(),
                value: "1".into(),
            }],
            options: vec![
                v1::Option {
                    key: "timeout".into(),
                    value: "1500ms".into(),
                },
                v1::Option {
                    key: "retries".into(),
                    value: "2".into(),
                },
                v1::Option {
                    key: "health_check_interval".into(),
                    value: "2000ms".into(),
                },
            ],
            ..Default::default()
        };
        let p = Policy::parse(&settings).unwrap();
        assert_eq!(p.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(p.retries, 2);
        assert_eq!(p.probe.interval, Duration::from_secs(2));
        assert_eq!(p.probe.timeout, DEFAULT_PROBE_TIMEOUT);
        let bad = v1::RouteSettings {
            options: vec![v1::Option {
                key: "timeout".into(),
                value: "soon".into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            Policy::parse(&bad).unwrap_err(),
            "option timeout: invalid duration \"soon\""
        );
    }
}
