//! The gates a request passes before it reaches a backend, one file each,
//! and the three places they are registered: the edge chain (every request),
//! a pool's chain and a route's chain (built with the table).

pub mod acme_challenge;
pub mod breaker;
pub mod geo;
pub mod https_redirect;
pub mod ip_list;
pub mod maintenance;
pub mod rate_limit;
pub mod request_checks;
pub mod select;
pub mod websocket;

use std::sync::Arc;

use portico_proto::{RouteSpec, Scheme};

use crate::backends::runtime::{BackendRuntime, RouteRuntime};
use crate::config::outbound::Outbound;
use crate::config::policy::Policy;
use crate::pipeline::chain::{Chain, Filter};

/// Every request, before routing.
pub fn edge_chain(
    limits: request_checks::HeadLimits,
    challenges: acme_challenge::Challenges,
) -> Chain {
    Chain::new(vec![
        Box::new(request_checks::RequestChecks(limits)),
        Box::new(acme_challenge::AcmeChallenge(challenges)),
    ])
}

/// A pool (the routes of one host and path prefix), before a route of it is
/// chosen.
pub fn pool_chain<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Chain {
    let mut chain: Vec<Box<dyn Filter>> = Vec::new();
    if policies.into_iter().any(|p| p.https_redirect) {
        chain.push(Box::new(https_redirect::HttpsRedirect));
    }
    Chain::new(chain)
}

/// What a route's chain is built from.
pub struct RouteParts<'a> {
    pub spec: &'a RouteSpec,
    pub policy: &'a Policy,
    /// In maintenance, and whether with a maintenance backend.
    pub maintenance: Option<bool>,
    pub runtime: &'a Arc<RouteRuntime>,
    pub backend: &'a Arc<BackendRuntime>,
    pub outbound: &'a Outbound,
    pub geoip: Option<&'a Arc<crate::config::geoip::GeoDb>>,
}

/// The route chosen for a request: only the filters its settings use.
pub fn route_chain(route: RouteParts<'_>) -> Chain {
    if let Some(has_backend) = route.maintenance {
        return Chain::new(vec![Box::new(maintenance::Maintenance { has_backend })]);
    }
    let policy = route.policy;
    let mut chain: Vec<Box<dyn Filter>> = Vec::new();
    if policy.ip_allow.is_some() || policy.ip_deny.is_some() {
        chain.push(Box::new(ip_list::IpList {
            allow: policy.ip_allow.clone(),
            deny: policy.ip_deny.clone(),
        }));
    }
    if policy.geo_allow.is_some() || policy.geo_deny.is_some() {
        chain.push(Box::new(geo::Geo {
            allow: policy.geo_allow.clone(),
            deny: policy.geo_deny.clone(),
            unknown_allowed: policy.geo_unknown_allowed,
            db: route.geoip.cloned(),
            runtime: route.runtime.clone(),
        }));
    }
    if let Some(limit) = policy.rate_limit {
        chain.push(Box::new(rate_limit::RateLimit {
            limit,
            exempt: policy.ratelimit_exempt.clone(),
            runtime: route.runtime.clone(),
        }));
    }
    let ws_backend = matches!(route.spec.backend.scheme, Scheme::Ws | Scheme::Wss);
    if !(policy.websocket || ws_backend) {
        chain.push(Box::new(websocket::NoUpgrade));
    }
    chain.push(Box::new(select::Select {
        backend: route.backend.clone(),
        breaker: policy.breaker,
        retries: policy.retries,
    }));
    if let Some(spec) = policy.breaker {
        chain.push(Box::new(breaker::Breaker {
            spec,
            route_id: route.spec.route_id.as_str().into(),
            backend_url: route.spec.backend.to_string().into(),
            backend: route.backend.clone(),
            outbound: route.outbound.clone(),
        }));
    }
    Chain::new(chain)
}

#[cfg(test)]
#[path = "filters_tests.rs"]
mod tests;
