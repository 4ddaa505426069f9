//! Circuit-breaker admission: a request takes a slot of its address's
//! breaker (503 while it is open), and its outcome is recorded when it ends.
//! Each change of a breaker's phase is reported to the control plane at once.

use std::sync::Arc;

use portico_proto::settings::BreakerSpec;
use portico_proto::v1;

use crate::backends::breaker::Breaker as State;
use crate::backends::runtime::{BackendRuntime, Endpoint};
use crate::config::outbound::Outbound;
use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request, Target};

pub struct Breaker {
    pub spec: BreakerSpec,
    pub route_id: Box<str>,
    pub backend_url: Box<str>,
    pub backend: Arc<BackendRuntime>,
    pub outbound: Outbound,
}

impl Breaker {
    /// Changes the endpoint's breaker with `change`, and reports the route's
    /// breaker when its phase moved.
    fn update<R>(&self, endpoint: &Endpoint, change: impl FnOnce(&mut State) -> R) -> R {
        let (result, changed) = {
            let mut breaker = endpoint.breaker.lock();
            let before = breaker.phase();
            let result = change(&mut breaker);
            (result, breaker.phase() != before)
        };
        if changed {
            self.report();
        }
        result
    }

    /// The state is read when sent, so reports arrive in the order of the states.
    fn report(&self) {
        self.outbound.send_with(|| {
            let state = self.backend.breaker_wire(&self.route_id, &self.backend_url);
            tracing::info!(route_id = %self.route_id, backend = %self.backend_url, state = %state.state, failures = state.failures, "circuit breaker changed");
            Some(v1::data_plane_message::Msg::BreakerChange(
                v1::BreakerChange { state: Some(state) },
            ))
        });
    }
}

impl Filter for Breaker {
    fn on_request(&self, req: &Request<'_>, admission: &mut Admission) -> Flow {
        let Some(endpoint) = &admission.endpoint else {
            return Flow::Next;
        };
        if !self.update(endpoint, |b| b.acquire(&self.spec, req.now)) {
            return Flow::Answer(
                Answer::text(503, "portico: circuit breaker open\n")
                    .retry_after(self.spec.timeout.as_secs().max(1)),
            );
        }
        admission.target = Some(Target::Backend { breaker: true });
        Flow::Next
    }

    fn on_done(&self, admission: &Admission, outcome: Option<bool>) {
        if admission.target != Some(Target::Backend { breaker: true }) {
            return;
        }
        if let Some(endpoint) = &admission.endpoint {
            self.update(endpoint, |b| match outcome {
                Some(success) => b.record(&self.spec, success, std::time::SystemTime::now()),
                None => b.release(),
            });
        }
    }
}
