//! Maintenance: a route in maintenance sends its requests to its maintenance
//! backend, or answers the built-in page (503, `Retry-After: 30`).

use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request, Target};

const MAINTENANCE_PAGE: &str = "<!doctype html><html><head><title>Down for maintenance</title></head>\
<body><h1>Down for maintenance</h1><p>This service is being updated. Please try again shortly.</p></body></html>\n";

/// `has_backend`: the route names a maintenance backend.
pub struct Maintenance {
    pub has_backend: bool,
}

impl Filter for Maintenance {
    fn on_request(&self, _: &Request<'_>, admission: &mut Admission) -> Flow {
        if self.has_backend {
            admission.target = Some(Target::Maintenance);
            return Flow::Next;
        }
        Flow::Answer(
            Answer::text(503, MAINTENANCE_PAGE)
                .content_type("text/html; charset=utf-8")
                .retry_after(30),
        )
    }
}
