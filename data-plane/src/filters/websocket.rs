//! Upgrades are refused (400) on routes that neither enable `websocket` nor
//! have a ws/wss backend; routes that allow them do not hold this filter.

use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request};

pub struct NoUpgrade;

impl Filter for NoUpgrade {
    fn on_request(&self, req: &Request<'_>, _: &mut Admission) -> Flow {
        if !req.upgrade {
            return Flow::Next;
        }
        Flow::Answer(Answer::text(
            400,
            "portico: websocket is not enabled for this route\n",
        ))
    }
}
