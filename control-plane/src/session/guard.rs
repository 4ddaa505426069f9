//! What a session may ask for: backends the policy allows and, with
//! registry auth, only its token's domains, within its route budget. A
//! refused command changes nothing.

use std::net::IpAddr;

use portico_proto::backend_policy::{not_allowed, BackendPolicy};
use portico_proto::BackendUrl;

use super::state::SessionState;
use crate::protocol::{Command, RouteField, RouteInput};
use crate::registry::auth::Grant;

/// The session's standing with the registry's auth.
pub enum Standing<'a> {
    /// No `--registry-auth`: every domain.
    Open,
    /// The grant of the session's token, as the auth file says now; `None`
    /// when the token is no longer in it.
    Token(Option<&'a Grant>),
}

pub struct Guard<'a> {
    pub policy: &'a BackendPolicy,
    pub standing: Standing<'a>,
    pub max_routes: usize,
}

impl Guard<'_> {
    /// Why `command` is refused, if it is.
    pub fn check(&self, command: &Command, state: &SessionState) -> Result<(), String> {
        match command {
            Command::RouteAdd(input) => self.routes(std::slice::from_ref(input), state),
            Command::RouteAddBulk(inputs) => self.routes(inputs, state),
            Command::RouteUpdate { field, .. } => match field {
                RouteField::BackendUrl(b) => self.backend(b),
                RouteField::Domains(d) => self.domains(d),
                RouteField::Priority(_) | RouteField::Path(_) => Ok(()),
            },
            Command::BackendTest(url) => self.backend(url),
            Command::MaintEnter {
                backend: Some(b), ..
            } => self.backend(b),
            _ => Ok(()),
        }
    }

    fn backend(&self, url: &BackendUrl) -> Result<(), String> {
        match url.host.parse::<IpAddr>() {
            Ok(ip) if !self.policy.allows(ip) => Err(not_allowed(ip)),
            _ => Ok(()),
        }
    }

    fn domains(&self, domains: &[String]) -> Result<(), String> {
        let grant = match self.standing {
            Standing::Open => return Ok(()),
            Standing::Token(None) => return Err("unauthorized".into()),
            Standing::Token(Some(grant)) => grant,
        };
        match domains.iter().find(|d| !grant.covers_domain(d)) {
            Some(d) => Err(format!("domain not allowed for this service: {d}")),
            None => Ok(()),
        }
    }

    fn routes(&self, inputs: &[RouteInput], state: &SessionState) -> Result<(), String> {
        for input in inputs {
            self.backend(&input.backend)?;
            self.domains(&input.domains)?;
        }
        let new = inputs.iter().filter(|i| !state.has_identical(i)).count();
        if new == 0 {
            return Ok(());
        }
        let token_max = match self.standing {
            Standing::Token(Some(Grant {
                max_routes: Some(max),
                ..
            })) => *max,
            _ => usize::MAX,
        };
        // The cheap bound first: counting exactly walks every staged change,
        // which made 50,000 pipelined adds quadratic (6,500 commands/s).
        if state.routes_at_most() + new <= self.max_routes.min(token_max) {
            return Ok(());
        }
        let after = state.routes_proposed() + new;
        if after > self.max_routes {
            return Err(format!(
                "too many routes: this session may have {}",
                self.max_routes
            ));
        }
        if after > token_max {
            return Err(format!(
                "too many routes: this service's token allows {token_max}"
            ));
        }
        Ok(())
    }
}
