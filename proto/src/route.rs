//! A route as both planes hold it once checked: `RouteSpec`, built from a
//! protobuf `Route` with every field and setting validated, and turned back
//! into one without loss.

use crate::model::{parse_route_id, validate_domain, validate_path, BackendUrl, ModelError};
use crate::settings::{Drain, Maintenance, RouteSettings, SettingsError};
use crate::v1;

/// Why a route from the wire was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Field(#[from] ModelError),
    #[error("route {route_id}: {source}")]
    Settings {
        route_id: String,
        source: SettingsError,
    },
}

/// A route as the data plane serves it: every field checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub route_id: String,
    /// The owning session's key, on the control plane only: never pushed,
    /// empty on data planes.
    pub session: String,
    /// The owning session's public handle (`instance#fingerprint`).
    pub owner: String,
    pub service: String,
    pub instance: String,
    pub domains: Vec<String>,
    pub path: String,
    pub backend: BackendUrl,
    pub priority: i64,
    pub settings: RouteSettings,
    pub drain: Option<Drain>,
    pub maintenance: Option<Maintenance>,
}

impl RouteSpec {
    /// The (host, matched path prefix) pairs it claims: the unit of
    /// ownership between services.
    pub fn owner_keys(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let prefix = crate::model::match_prefix(&self.path);
        self.domains.iter().map(move |d| (d.as_str(), prefix))
    }
}

#[cfg(any(test, feature = "testing"))]
impl RouteSpec {
    /// A route with default settings, for tests.
    pub fn for_test(id: &str, service: &str, hosts: &[&str], path: &str, backend: &str) -> Self {
        RouteSpec {
            route_id: id.into(),
            session: format!("s-{id}"),
            owner: format!("i#{id}"),
            service: service.into(),
            instance: "i".into(),
            domains: hosts.iter().map(|h| h.to_string()).collect(),
            path: path.into(),
            backend: BackendUrl::parse(backend).expect("a valid backend url"),
            priority: 0,
            settings: RouteSettings::default(),
            drain: None,
            maintenance: None,
        }
    }
}

impl TryFrom<&v1::Route> for RouteSpec {
    type Error = RouteError;

    fn try_from(route: &v1::Route) -> Result<Self, RouteError> {
        parse_route_id(&route.route_id)?;
        if route.domains.is_empty() {
            return Err(ModelError::Missing {
                route_id: route.route_id.clone(),
                field: "domains",
            }
            .into());
        }
        if route.service.is_empty() {
            return Err(ModelError::Missing {
                route_id: route.route_id.clone(),
                field: "service",
            }
            .into());
        }
        let domains = route
            .domains
            .iter()
            .map(|d| validate_domain(d))
            .collect::<Result<Vec<_>, ModelError>>()?;
        validate_path(&route.path)?;
        let settings = match &route.settings {
            Some(s) => RouteSettings::try_from(s).map_err(|source| RouteError::Settings {
                route_id: route.route_id.clone(),
                source,
            })?,
            None => RouteSettings::default(),
        };
        Ok(RouteSpec {
            route_id: route.route_id.clone(),
            session: String::new(),
            owner: route.owner.clone(),
            service: route.service.clone(),
            instance: route.instance.clone(),
            domains,
            path: route.path.clone(),
            backend: BackendUrl::parse(&route.backend_url)?,
            priority: route.priority,
            settings,
            drain: route.drain.as_ref().map(Drain::from),
            maintenance: route
                .maintenance
                .as_ref()
                .map(Maintenance::try_from)
                .transpose()?,
        })
    }
}

impl From<&RouteSpec> for v1::Route {
    fn from(spec: &RouteSpec) -> v1::Route {
        v1::Route {
            route_id: spec.route_id.clone(),
            owner: spec.owner.clone(),
            service: spec.service.clone(),
            instance: spec.instance.clone(),
            domains: spec.domains.clone(),
            path: spec.path.clone(),
            backend_url: spec.backend.to_string(),
            priority: spec.priority,
            settings: Some((&spec.settings).into()),
            drain: spec.drain.as_ref().map(v1::Drain::from),
            maintenance: spec.maintenance.as_ref().map(v1::Maintenance::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_round_trips_without_loss() {
        let route = v1::Route {
            route_id: "r3".into(),
            owner: "web-1#0123abcd".into(),
            service: "web".into(),
            instance: "web-1".into(),
            domains: vec!["a.com".into()],
            path: "/api".into(),
            backend_url: "http://b:81".into(),
            priority: 2,
            settings: Some(v1::RouteSettings {
                options: vec![v1::Option {
                    key: "retries".into(),
                    value: "3".into(),
                }],
                ..Default::default()
            }),
            drain: Some(v1::Drain {
                started_at_unix_ms: 1_700_000_000_000,
                duration_ms: 60_000,
            }),
            maintenance: Some(v1::Maintenance {
                backend_url: String::new(),
                entered_at_unix_ms: 1_700_000_000_500,
            }),
        };
        let spec = RouteSpec::try_from(&route).unwrap();
        assert_eq!(v1::Route::from(&spec), route);
        let mut bad = route.clone();
        bad.settings.as_mut().unwrap().options[0].value = "9".into();
        assert!(matches!(
            RouteSpec::try_from(&bad),
            Err(RouteError::Settings { .. })
        ));
    }
}
