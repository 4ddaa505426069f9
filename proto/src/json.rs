//! JSON views of configuration for operators: the data plane's `/config`
//! and `porticoctl snapshot` show settings the same way.

use serde_json::{json, Value};

use crate::v1;

pub fn settings_json(s: &v1::RouteSettings) -> Value {
    json!({
        "response_headers": s.response_headers.iter().map(|h| json!([h.name, h.value])).collect::<Vec<_>>(),
        "options": s.options.iter().map(|o| (o.key.clone(), Value::String(o.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "health": s.health.as_ref().map(|h| json!({"path": h.path, "interval_ms": h.interval_ms, "timeout_ms": h.timeout_ms})),
        "rate_limit": s.rate_limit.as_ref().map(|l| json!({"requests": l.requests, "window_ms": l.window_ms})),
        "circuit_breaker": s.circuit_breaker.as_ref().map(|b| json!({
            "threshold": b.threshold, "timeout_ms": b.timeout_ms, "half_open_requests": b.half_open_requests
        })),
    })
}

pub fn drain_json(d: &v1::Drain) -> Value {
    json!({"started_at_unix_ms": d.started_at_unix_ms, "duration_ms": d.duration_ms})
}
