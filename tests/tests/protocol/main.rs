//! Conformance of the registry protocol against a real control plane (and a
//! data plane where a command reaches one): success shapes parsed as JSON,
//! error paths, ordering of events, isolation, take-over and expiry.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
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

fn gunzip_base64(payload: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .expect("base64");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("gzip");
    serde_json::from_str(&text).expect("json")
}
