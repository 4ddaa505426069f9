//! Telemetry the control plane answers from: per-route statistics and
//! circuit-breaker states reported by data planes, merged on request, and
//! BACKEND_TEST. Data planes do not report yet, so figures start at zero.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use portico_proto::BackendUrl;
use serde_json::{json, Value};

use crate::probe;
use crate::protocol::{Reply, RouteId};

#[derive(Debug, Clone, Default)]
struct RouteStats {
    requests: u64,
    errors: u64,
    bytes_sent: u64,
    bytes_received: u64,
    latency_sum_ms: f64,
    status_codes: HashMap<u16, u64>,
}

#[derive(Clone, Default)]
pub struct Telemetry {
    routes: Arc<Mutex<HashMap<RouteId, RouteStats>>>,
}

impl Telemetry {
    /// STATS_GET for one route, summed over every data plane.
    pub fn route_stats(&self, id: RouteId) -> Value {
        let stats = self.routes.lock().get(&id).cloned().unwrap_or_default();
        let avg = if stats.requests == 0 {
            0.0
        } else {
            stats.latency_sum_ms / stats.requests as f64
        };
        let codes: serde_json::Map<String, Value> = stats
            .status_codes
            .iter()
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect();
        json!({
            "route_id": id.to_string(),
            "requests": stats.requests,
            "errors": stats.errors,
            "avg_latency_ms": avg,
            "p50_latency_ms": 0.0,
            "p95_latency_ms": 0.0,
            "p99_latency_ms": 0.0,
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "status_codes": codes,
        })
    }

    /// CIRCUIT_BREAKER_STATUS: the merged state and each data plane's.
    pub fn breaker_status(&self, id: RouteId) -> Value {
        json!({
            "route_id": id.to_string(),
            "state": "closed",
            "failures": 0,
            "last_failure": null,
            "next_attempt": null,
            "data_planes": [],
        })
    }

    pub fn reset_breaker(&self, _id: RouteId) {}

    /// BACKEND_TEST: `GET /` with a 5 s limit.
    pub async fn backend_test(&self, url: BackendUrl) -> Reply {
        let result = probe::probe(&url, "/", Duration::from_secs(5)).await;
        match (result.status_code, result.error) {
            (Some(status), _) => Reply::with(
                "BACKEND_OK",
                json!({
                    "reachable": true,
                    "response_time_ms": result.response_time_ms,
                    "status_code": status,
                    "tls_valid": result.tls_valid,
                })
                .to_string(),
            ),
            (None, error) => Reply::with(
                "BACKEND_FAIL",
                json!({
                    "reachable": false,
                    "error": error.unwrap_or_else(|| "unreachable".into()),
                })
                .to_string(),
            ),
        }
    }
}
