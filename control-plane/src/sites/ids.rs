//! Route ids for a site's routes: the id of the active route with the same
//! domains, path and backend, else a new one.

use std::collections::HashMap;

use portico_proto::{BackendUrl, RouteSpec};

use super::compile::Site;
use crate::config::global::GlobalConfig;
use crate::protocol::RouteId;
use crate::session::{RouteIds, SessionState};
use crate::store::StoreFailed;

/// The site as a session with ids, and its routes as they would be active.
pub fn resolve(
    global: &GlobalConfig,
    key: &str,
    site: &Site,
    ids: &RouteIds,
) -> Result<(SessionState, Vec<RouteSpec>), StoreFailed> {
    let active: HashMap<(&[String], &str, &BackendUrl), u64> = global
        .routes_of(key)
        .filter_map(|r| {
            let id = portico_proto::model::parse_route_id(&r.route_id).ok()?;
            Some(((r.domains.as_slice(), r.path.as_str(), &r.backend), id))
        })
        .collect();
    let mut chosen = Vec::with_capacity(site.routes.len());
    for route in &site.routes {
        let input = &route.input;
        let id = match active.get(&(
            input.domains.as_slice(),
            input.path.as_str(),
            &input.backend,
        )) {
            Some(id) => RouteId(*id),
            None if site.enabled => ids.allocate()?,
            // A disabled site serves nothing: no ids are spent on it.
            None => RouteId(0),
        };
        chosen.push(id);
    }
    let state = site.state(&chosen);
    let routes = state.active_specs(&state.ops);
    Ok((state, routes))
}
