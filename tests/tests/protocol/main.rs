//! Conformance of the registry protocol against a real control plane (and a
//! data plane where a command reaches one): success shapes parsed as JSON,
//! error paths, ordering of events, isolation, take-over and expiry.

use std::time::Duration;

use portico_e2e::*;
use serde_json::{json, Value};

mod errors;
mod operations;
mod routes;
mod session;
mod settings;
mod staging;
mod telemetry;

fn route_ids(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["route_id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
