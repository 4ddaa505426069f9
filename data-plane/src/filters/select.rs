//! Backend selection: the next healthy address of the route's backend whose
//! breaker lets a request through (503 when every one went down since the
//! route was chosen), and the request's retry budget.

use std::sync::Arc;

use pingora::http::RequestHeader;
use portico_proto::settings::BreakerSpec;

use crate::backends::runtime::BackendRuntime;
use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request, Target};

pub struct Select {
    pub backend: Arc<BackendRuntime>,
    pub breaker: Option<BreakerSpec>,
    pub retries: u8,
}

impl Filter for Select {
    fn on_request(&self, req: &Request<'_>, admission: &mut Admission) -> Flow {
        let spec = self.breaker.as_ref();
        let endpoint = self.backend.pick(spec, req.now);
        if endpoint.is_none() && !self.backend.endpoints().list.is_empty() {
            // Every address went down or opened its breaker since the choice.
            let why = match spec {
                Some(_) => "circuit breaker open",
                None => "every backend is unhealthy",
            };
            let retry_after = spec.map_or(1, |s| s.timeout.as_secs().max(1));
            return Flow::Answer(
                Answer::text(503, format!("portico: {why}\n")).retry_after(retry_after),
            );
        }
        admission.endpoint = endpoint;
        admission.retries_left = if idempotent(req.head) {
            self.retries
        } else {
            0
        };
        admission.target = Some(Target::Backend { breaker: false });
        Flow::Next
    }
}

/// Requests that may be sent again to another backend.
pub fn idempotent(req: &RequestHeader) -> bool {
    matches!(
        req.method.as_str(),
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}
