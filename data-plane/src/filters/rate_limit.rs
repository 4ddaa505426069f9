//! `RATE_LIMIT_SET`: requests per client IP over a fixed window; past it,
//! 429 with `Retry-After`.

use std::sync::Arc;

use portico_proto::settings::RateLimit as Limit;

use crate::backends::runtime::RouteRuntime;
use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request};

pub struct RateLimit {
    pub limit: Limit,
    /// `ratelimit_exempt`: clients never limited.
    pub exempt: Option<portico_proto::ip_set::IpSet>,
    pub runtime: Arc<RouteRuntime>,
}

impl Filter for RateLimit {
    fn on_request(&self, req: &Request<'_>, _: &mut Admission) -> Flow {
        let Limit { requests, window } = self.limit;
        let Some(ip) = req.client else {
            return Flow::Next;
        };
        if self.exempt.as_ref().is_some_and(|e| e.contains(ip)) {
            return Flow::Next;
        }
        match self.runtime.limiter(requests, window).check(ip) {
            Ok(()) => Flow::Next,
            Err(retry_after) => {
                self.runtime.metrics.rate_limited();
                let body =
                    format!("portico: rate limit of {requests} requests per {window:?} exceeded\n");
                Flow::Answer(Answer::text(429, body).retry_after(retry_after))
            }
        }
    }
}
