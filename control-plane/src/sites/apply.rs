//! A site's change through the committer: one atomic commit, like a
//! session's CONFIG_APPLY, with the site's route ids resolved under the
//! commit's lock.

use std::sync::Arc;

use actix::prelude::*;
use portico_proto::RouteSpec;

use super::compile::{site_key, Site};
use crate::config::committer::{Applied, Committer, ProposeError};
use crate::config::global::GlobalConfig;
use crate::session::RouteIds;
use crate::store::Batch;

/// Make a site's routes (`--sites`) what its file says. Its routes keep their ids from one change to the next
/// (matched by domains, path and backend against what is active, under the
/// commit's lock), so replicas that read the same file make the same routes
/// and the second finds nothing to change.
#[derive(Message)]
#[rtype(result = "Result<Applied, ProposeError>")]
pub struct ApplySite {
    pub site: Arc<Site>,
    pub ids: Arc<RouteIds>,
}

impl Handler<ApplySite> for Committer {
    type Result = Result<Applied, ProposeError>;

    fn handle(&mut self, msg: ApplySite, _: &mut Context<Self>) -> Self::Result {
        let key = site_key(&msg.site.name);
        let service = msg.site.name.clone();
        let resolve = |g: &GlobalConfig| super::ids::resolve(g, &key, &msg.site, &msg.ids);
        let (state, routes) = {
            let global = self.global.read();
            let (state, routes) = resolve(&global)?;
            if !global.changes(&key, &routes) {
                global.check(&service, &routes)?;
                return Ok(Self::not_applied());
            }
            (state, routes)
        };
        let batch = Batch {
            put: vec![state.record()],
            ..Default::default()
        };
        let plan = |g: &GlobalConfig, routes: &mut Vec<RouteSpec>, batch: &mut Batch| {
            let (state, fresh) = resolve(g)?;
            g.check(&service, &fresh)?;
            batch.put = vec![state.record()];
            *routes = fresh;
            Ok(g.changes(&key, routes))
        };
        let apply = |g: &mut GlobalConfig, routes| Ok(g.apply(&key, &service, routes));
        let commit = self.change(batch, routes, plan, apply)?;
        Ok(self.publish(commit, ""))
    }
}
