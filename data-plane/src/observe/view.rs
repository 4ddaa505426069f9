//! The admin `/config` view: the routes this data plane serves, in the
//! operators' route view (`portico_proto::json`), each with where its
//! backend's name resolves now and the certificate its hosts are served
//! with, and the certificates held, for operators and tests.

use serde_json::{json, Value};

use crate::backends::runtime::BackendRuntime;
use crate::config::table::RouteTable;
use crate::edge::certs::CertStore;

pub fn config_json(version: u64, table: &RouteTable, certs: &CertStore) -> Value {
    let mut routes: Vec<Value> = table
        .routes()
        .map(|r| {
            let mut route = portico_proto::json::route_json(&r.spec);
            route["backend_resolution"] = resolution_json(&r.backend);
            route["certificates"] = r
                .spec
                .domains
                .iter()
                .map(|host| {
                    let name = certs.for_host(host).map(|c| c.wire.name.clone());
                    (host.clone(), json!(name))
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
            route
        })
        .collect();
    routes.sort_by(|a, b| a["route_id"].as_str().cmp(&b["route_id"].as_str()));
    let mut certificates: Vec<Value> = certs
        .iter()
        .map(|c| {
            json!({
                "name": c.wire.name,
                "domains": c.domains,
                "source": c.wire.source,
                "serial": c.wire.serial,
                "not_after": portico_proto::time::rfc3339(portico_proto::time::from_unix_ms(c.wire.not_after_unix_ms)),
            })
        })
        .collect();
    certificates.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({ "version": version, "routes": routes, "certificates": certificates })
}

/// The backend's current addresses, each with its health and breaker, and
/// the name's last lookup.
fn resolution_json(backend: &BackendRuntime) -> Value {
    let name = backend.name.current();
    let addresses: Vec<Value> = backend
        .endpoints()
        .list
        .iter()
        .map(|e| {
            json!({
                "address": e.addr.to_string(),
                "healthy": e.healthy(),
                "breaker": e.breaker.lock().name(),
            })
        })
        .collect();
    json!({
        "addresses": addresses,
        "resolved_at": name.resolved_at.map(portico_proto::time::rfc3339),
        "error": name.error,
        "stale": name.stale,
    })
}
