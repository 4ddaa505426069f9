//! ACME HTTP-01: answers `/.well-known/acme-challenge/<token>` on plain HTTP
//! for any host, before routing, with the answer this data plane holds.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request};

/// Where ACME servers fetch HTTP-01 answers.
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Token -> key authorization, as pushed by the control plane.
pub type Challenges = Arc<ArcSwap<HashMap<String, String>>>;

pub struct AcmeChallenge(pub Challenges);

impl Filter for AcmeChallenge {
    fn on_request(&self, req: &Request<'_>, _: &mut Admission) -> Flow {
        if req.tls {
            return Flow::Next;
        }
        let Some(token) = req.head.uri.path().strip_prefix(ACME_CHALLENGE) else {
            return Flow::Next;
        };
        match self.0.load().get(token) {
            Some(answer) => {
                Flow::Answer(Answer::text(200, answer.clone()).content_type("text/plain"))
            }
            None => Flow::Next,
        }
    }
}
