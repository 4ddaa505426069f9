//! The operators' JSON view of a route, one for every place that shows one:
//! the data plane's `/config` and `porticoctl routes` / `snapshot`. (The
//! services' `ROUTE_LIST` is the protocol's own shape, not this view.)

use serde_json::{json, Map, Value};

use crate::route::RouteSpec;
use crate::settings::RouteSettings;
use crate::time::unix_ms;

/// A route: identity, match, backend, operational state and its settings.
pub fn route_json(r: &RouteSpec) -> Value {
    let mut view = json!({
        "route_id": r.route_id,
        "owner": r.owner,
        "service": r.service,
        "instance": r.instance,
        "domains": r.domains,
        "path": r.path,
        "backend_url": r.backend.to_string(),
        "priority": r.priority,
        "drain": r.drain.map(|d| json!({
            "started_at_unix_ms": unix_ms(d.started_at),
            "duration_ms": d.duration.as_millis() as u64,
        })),
        "maintenance": r.maintenance.as_ref().map(|m| json!({
            "backend_url": m.backend.as_ref().map(ToString::to_string),
            "entered_at_unix_ms": unix_ms(m.entered_at),
        })),
    });
    if let (Value::Object(view), Value::Object(settings)) = (&mut view, settings_json(&r.settings))
    {
        view.extend(settings);
    }
    view
}

/// The settings part of [`route_json`].
pub fn settings_json(s: &RouteSettings) -> Value {
    let options: Map<String, Value> = s
        .options
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_string())))
        .collect();
    json!({
        "response_headers": s.response_headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        "options": options,
        "health": s.health.as_ref().map(|h| json!({
            "path": h.path,
            "interval_ms": h.interval.as_millis() as u64,
            "timeout_ms": h.timeout.as_millis() as u64,
        })),
        "rate_limit": s.rate_limit.map(|l| json!({
            "requests": l.requests,
            "window_ms": l.window.as_millis() as u64,
        })),
        "circuit_breaker": s.circuit_breaker.map(|b| json!({
            "threshold": b.threshold,
            "timeout_ms": b.timeout.as_millis() as u64,
            "half_open_requests": b.half_open_requests,
        })),
    })
}
