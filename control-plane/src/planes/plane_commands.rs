//! Commands a service sends through the control plane to its data planes:
//! CIRCUIT_BREAKER_RESET on every one, and BACKEND_TEST where traffic flows.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use portico_proto::{probe, v1, BackendUrl};
use serde_json::json;
use tokio::sync::oneshot;

use crate::planes::peers::Peers;
use crate::planes::publisher::{AskBackendTest, ListPlanes, Publisher, ResetBreakers};
use crate::protocol::{Reply, ReplyCode, RouteId};

/// How long CIRCUIT_BREAKER_RESET waits for data planes to confirm.
const RESET_WAIT: Duration = Duration::from_secs(2);
/// How long BACKEND_TEST waits for a data plane's answer.
const TEST_WAIT: Duration = Duration::from_secs(7);

/// What asking this replica's data planes for a backend test gave.
pub enum Tested {
    /// None is connected here.
    NoPlane,
    /// The one asked did not answer in time.
    Silent,
    Answered(v1::BackendTestResult),
}

#[derive(Clone)]
pub struct PlaneCommands {
    publisher: Addr<Publisher>,
    /// The other replicas, whose data planes these commands reach too.
    pub peers: Arc<Peers>,
}

impl PlaneCommands {
    pub fn new(publisher: Addr<Publisher>, peers: Arc<Peers>) -> Self {
        PlaneCommands { publisher, peers }
    }

    /// The data planes of the fleet (every replica's, not gone) that did not
    /// say they can do `feature` in their hello.
    pub async fn lacking(&self, feature: &str) -> Vec<String> {
        let Ok(list) = self.publisher.send(ListPlanes).await else {
            return Vec::new();
        };
        list.data_planes
            .into_iter()
            .filter(|p| !matches!(p.state.as_str(), "gone" | "stopped"))
            .filter(|p| !p.features.iter().any(|f| f == feature))
            .map(|p| p.node_id)
            .collect()
    }

    /// CIRCUIT_BREAKER_RESET: closes the route's breakers on every data
    /// plane of the fleet, whichever replica holds it; returns once each
    /// confirmed, gone away, or `RESET_WAIT` passed.
    pub async fn reset_breaker(&self, id: RouteId) {
        let route_id = id.to_string();
        futures::join!(
            self.reset_here(&route_id),
            self.peers.reset_breaker(&route_id, RESET_WAIT)
        );
    }

    /// Closes the route's breakers on this replica's data planes.
    pub async fn reset_here(&self, route_id: &str) {
        let (done, confirmed) = oneshot::channel();
        let reset = ResetBreakers {
            route_id: route_id.to_string(),
            done,
        };
        if self.publisher.send(reset).await.is_ok() {
            let _ = tokio::time::timeout(RESET_WAIT, confirmed).await;
        }
    }

    /// BACKEND_TEST from one of this replica's data planes.
    pub async fn backend_test_here(&self, url: &str) -> Tested {
        let (tx, rx) = oneshot::channel();
        let asked = self
            .publisher
            .send(AskBackendTest {
                url: url.to_string(),
                reply: tx,
            })
            .await
            .unwrap_or(false);
        if !asked {
            return Tested::NoPlane;
        }
        match tokio::time::timeout(TEST_WAIT, rx).await {
            Ok(Ok(result)) => Tested::Answered(result),
            _ => Tested::Silent,
        }
    }

    /// BACKEND_TEST from a data plane: this replica's, else another
    /// replica's, else from here when the fleet has none (or it was silent).
    pub async fn backend_test(&self, url: BackendUrl) -> Reply {
        let target = url.to_string();
        let remote = match self.backend_test_here(&target).await {
            Tested::Answered(result) => Some(result),
            Tested::Silent => None,
            Tested::NoPlane => self.peers.backend_test(&target, TEST_WAIT).await,
        };
        let result = match remote {
            Some(r) => probe::ProbeResult {
                status_code: r.reachable.then_some(r.status_code as u16),
                response_time_ms: r.response_time_ms,
                tls_valid: r.tls_valid,
                error: (!r.error.is_empty()).then_some(r.error),
            },
            None => probe::probe(&url, "/", Duration::from_secs(5)).await,
        };
        match result.status_code {
            Some(status) => Reply::with(
                ReplyCode::BackendOk,
                json!({
                    "reachable": true,
                    "response_time_ms": result.response_time_ms,
                    "status_code": status,
                    "tls_valid": result.tls_valid,
                })
                .to_string(),
            ),
            None => Reply::with(
                ReplyCode::BackendFail,
                json!({"reachable": false, "error": result.error.unwrap_or_else(|| "unreachable".into())}).to_string(),
            ),
        }
    }
}
