//! The admin `/config` view: the routes this data plane serves, with every
//! setting as it arrived, as JSON for operators and tests.

use portico_proto::RouteSpec;
use serde_json::{json, Value};

use crate::table::RouteTable;

pub fn config_json(version: u64, table: &RouteTable) -> Value {
    let mut routes: Vec<Value> = table.routes().map(|r| route_json(&r.spec)).collect();
    routes.sort_by(|a, b| a["route_id"].as_str().cmp(&b["route_id"].as_str()));
    json!({ "version": version, "routes": routes })
}

fn route_json(r: &RouteSpec) -> Value {
    let mut v = portico_proto::json::settings_json(&r.settings);
    let extra = json!({
        "route_id": r.route_id,
        "session_id": r.session_id,
        "service": r.service,
        "instance": r.instance,
        "domains": r.domains,
        "path": r.path,
        "backend_url": r.backend.to_string(),
        "priority": r.priority,
        "drain": r.drain.as_ref().map(portico_proto::json::drain_json),
        "maintenance": r.maintenance.as_ref().map(|m| json!({"backend_url": m.as_ref().map(|b| b.to_string())})),
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
        base.extend(more);
    }
    v
}
