//! The admin `/config` view: the routes this data plane serves, in the
//! operators' route view (`portico_proto::json`), for operators and tests.

use serde_json::{json, Value};

use crate::table::RouteTable;

pub fn config_json(version: u64, table: &RouteTable) -> Value {
    let mut routes: Vec<Value> = table
        .routes()
        .map(|r| portico_proto::json::route_json(&r.spec))
        .collect();
    routes.sort_by(|a, b| a["route_id"].as_str().cmp(&b["route_id"].as_str()));
    json!({ "version": version, "routes": routes })
}
