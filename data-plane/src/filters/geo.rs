//! `geo_allow`, `geo_deny` and `geo_unknown`: clients by the country the
//! GeoIP database gives their address; 403 otherwise, counted by country.

use std::sync::Arc;

use portico_proto::settings::Names;

use crate::backends::runtime::RouteRuntime;
use crate::config::geoip::{Country, GeoDb};
use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request};

pub struct Geo {
    pub allow: Option<Names>,
    pub deny: Option<Names>,
    pub unknown_allowed: bool,
    /// `None`: this data plane has no `--geoip-db`, so nothing passes.
    pub db: Option<Arc<GeoDb>>,
    pub runtime: Arc<RouteRuntime>,
}

/// What the counters and the access log name a country the database does
/// not know by.
pub const UNKNOWN: &str = "unknown";

impl Geo {
    /// Whether a client from `country` (`None`: unknown) passes.
    pub fn admits(&self, country: Option<Country>) -> bool {
        let Some(code) = country else {
            return self.unknown_allowed;
        };
        let code = std::str::from_utf8(&code).unwrap_or_default();
        if self.deny.as_ref().is_some_and(|d| d.contains(code)) {
            return false;
        }
        self.allow.as_ref().is_none_or(|a| a.contains(code))
    }
}

impl Filter for Geo {
    fn on_request(&self, req: &Request<'_>, admission: &mut Admission) -> Flow {
        let Some(db) = &self.db else {
            self.runtime.geo_blocked(UNKNOWN);
            return Flow::Answer(Answer::text(
                403,
                "portico: this route filters by country and this data plane has no GeoIP database\n",
            ));
        };
        let country = req.client.and_then(|ip| db.country(ip));
        admission.country = country;
        if self.admits(country) {
            return Flow::Next;
        }
        let name = country.as_ref().and_then(|c| std::str::from_utf8(c).ok());
        self.runtime.geo_blocked(name.unwrap_or(UNKNOWN));
        Flow::Answer(Answer::text(403, "portico: forbidden\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(allow: &str, deny: &str, unknown_allowed: bool) -> Geo {
        let names = |raw: &str| Some(Names::parse(raw).unwrap()).filter(|n| !n.is_empty());
        Geo {
            allow: names(allow),
            deny: names(deny),
            unknown_allowed,
            db: None,
            runtime: Arc::default(),
        }
    }

    #[test]
    fn deny_wins_allow_limits_and_unknown_follows_geo_unknown() {
        let g = geo("de,fr", "fr", true);
        assert!(g.admits(Some(*b"DE")));
        assert!(!g.admits(Some(*b"FR")) && !g.admits(Some(*b"US")));
        assert!(g.admits(None));
        assert!(!geo("", "us", false).admits(None));
        assert!(geo("", "us", false).admits(Some(*b"DE")));
    }
}
