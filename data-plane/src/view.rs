//! The admin `/config` view: the routes this data plane serves, with every
//! setting as it arrived, as JSON for operators and tests.

use portico_proto::RouteSpec;
use serde_json::{json, Value};

use crate::table::RouteTable;

pub fn config_json(version: u64, table: &RouteTable) -> Value {
    let mut routes: Vec<Value> = table.routes.iter().map(|r| route_json(&r.spec)).collect();
    routes.sort_by(|a, b| a["route_id"].as_str().cmp(&b["route_id"].as_str()));
    json!({ "version": version, "routes": routes })
}

fn route_json(r: &RouteSpec) -> Value {
    let s = &r.settings;
    json!({
        "route_id": r.route_id,
        "session_id": r.session_id,
        "service": r.service,
        "instance": r.instance,
        "domains": r.domains,
        "path": r.path,
        "backend_url": r.backend.to_string(),
        "priority": r.priority,
        "response_headers": s.response_headers.iter().map(|h| json!([h.name, h.value])).collect::<Vec<_>>(),
        "options": s.options.iter().map(|o| (o.key.clone(), Value::String(o.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "health": s.health.as_ref().map(|h| json!({"path": h.path, "interval_ms": h.interval_ms, "timeout_ms": h.timeout_ms})),
        "rate_limit": s.rate_limit.as_ref().map(|l| json!({"requests": l.requests, "window_ms": l.window_ms})),
        "circuit_breaker": s.circuit_breaker.as_ref().map(|b| json!({
            "threshold": b.threshold, "timeout_ms": b.timeout_ms, "half_open_requests": b.half_open_requests
        })),
        "drain": r.drain.as_ref().map(|d| json!({"started_at_unix_ms": d.started_at_unix_ms, "duration_ms": d.duration_ms})),
        "maintenance": r.maintenance.as_ref().map(|m| json!({"backend_url": m.as_ref().map(|b| b.to_string())})),
    })
}
