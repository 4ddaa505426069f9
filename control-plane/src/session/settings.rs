//! Staged settings of a session: headers, options, health checks, rate
//! limits and circuit breakers, each at session level (`ALL`) or per route,
//! and how they resolve into one route's settings for the data planes.

use std::collections::{BTreeMap, BTreeSet};

use portico_proto::settings::RouteSettings;

use crate::protocol::{
    BreakerSpec, HealthCheck, OptionKey, OptionValue, RateLimit, RouteId, Scopes, Target,
};

/// Response headers by target, then by lower-case name: (name as given, value).
pub type Headers = BTreeMap<Target, BTreeMap<String, (String, String)>>;
pub type Options = BTreeMap<Target, BTreeMap<OptionKey, OptionValue>>;

/// One scope's active value and, once edited, its staged value.
#[derive(Debug, Clone, Default)]
pub struct Scoped<T> {
    pub active: T,
    pub staged: Option<T>,
}

impl<T: Clone + PartialEq> Scoped<T> {
    /// The staged value, created from the active one on first edit.
    pub fn edit(&mut self) -> &mut T {
        self.staged.get_or_insert_with(|| self.active.clone())
    }

    pub fn is_staged(&self) -> bool {
        self.staged.as_ref().is_some_and(|s| *s != self.active)
    }

    pub fn commit(&mut self) {
        if let Some(staged) = self.staged.take() {
            self.active = staged;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub headers: Scoped<Headers>,
    pub options: Scoped<Options>,
    pub health: Scoped<BTreeMap<RouteId, HealthCheck>>,
    pub ratelimit: Scoped<BTreeMap<Target, RateLimit>>,
    pub breaker: Scoped<BTreeMap<Target, BreakerSpec>>,
}

/// Which value a route gets: its own, else the session's `ALL`.
fn pick<V: Clone>(map: &BTreeMap<Target, V>, route: RouteId) -> Option<V> {
    map.get(&Target::Route(route))
        .or_else(|| map.get(&Target::All))
        .cloned()
}

fn targets<V>(map: &BTreeMap<Target, V>) -> impl Iterator<Item = RouteId> + '_ {
    map.keys().filter_map(|t| match t {
        Target::Route(id) => Some(*id),
        Target::All => None,
    })
}

impl Settings {
    pub fn rollback(&mut self) {
        self.headers.staged = None;
        self.options.staged = None;
        self.health.staged = None;
        self.ratelimit.staged = None;
        self.breaker.staged = None;
    }

    pub fn commit(&mut self, scopes: Scopes) {
        if scopes.headers {
            self.headers.commit();
        }
        if scopes.options {
            self.options.commit();
        }
        if scopes.health {
            self.health.commit();
        }
        if scopes.ratelimit {
            self.ratelimit.commit();
        }
        if scopes.circuit_breaker {
            self.breaker.commit();
        }
    }

    pub fn has_staged(&self) -> bool {
        self.headers.is_staged()
            || self.options.is_staged()
            || self.health.is_staged()
            || self.ratelimit.is_staged()
            || self.breaker.is_staged()
    }

    /// The first staged setting, in the given scopes, that names a route not
    /// in `routes` (the active set after the apply): (route, scope name).
    pub fn dangling(
        &self,
        scopes: Scopes,
        routes: &BTreeSet<RouteId>,
    ) -> Option<(RouteId, &'static str)> {
        let staged_targets = |on: bool, ids: Vec<RouteId>, name: &'static str| {
            on.then(|| {
                ids.into_iter()
                    .find(|id| !routes.contains(id))
                    .map(|id| (id, name))
            })
            .flatten()
        };
        let h = self
            .headers
            .staged
            .as_ref()
            .map(|m| targets(m).collect())
            .unwrap_or_default();
        let o = self
            .options
            .staged
            .as_ref()
            .map(|m| targets(m).collect())
            .unwrap_or_default();
        let hc = self
            .health
            .staged
            .as_ref()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        let r = self
            .ratelimit
            .staged
            .as_ref()
            .map(|m| targets(m).collect())
            .unwrap_or_default();
        let b = self
            .breaker
            .staged
            .as_ref()
            .map(|m| targets(m).collect())
            .unwrap_or_default();
        staged_targets(scopes.headers, h, "headers")
            .or_else(|| staged_targets(scopes.options, o, "options"))
            .or_else(|| staged_targets(scopes.health, hc, "health check"))
            .or_else(|| staged_targets(scopes.ratelimit, r, "rate limit"))
            .or_else(|| staged_targets(scopes.circuit_breaker, b, "circuit breaker"))
    }

    /// Drops active route-level settings of routes that no longer exist.
    pub fn forget_routes(&mut self, routes: &BTreeSet<RouteId>) {
        let keep = |t: &Target| match t {
            Target::All => true,
            Target::Route(id) => routes.contains(id),
        };
        self.headers.active.retain(|t, _| keep(t));
        self.options.active.retain(|t, _| keep(t));
        self.health.active.retain(|id, _| routes.contains(id));
        self.ratelimit.active.retain(|t, _| keep(t));
        self.breaker.active.retain(|t, _| keep(t));
    }

    /// The active settings of one route, resolved for the data planes.
    pub fn resolve(&self, route: RouteId) -> RouteSettings {
        let mut headers: BTreeMap<String, (String, String)> = self
            .headers
            .active
            .get(&Target::All)
            .cloned()
            .unwrap_or_default();
        if let Some(own) = self.headers.active.get(&Target::Route(route)) {
            headers.extend(own.clone());
        }
        let mut options: BTreeMap<OptionKey, OptionValue> = self
            .options
            .active
            .get(&Target::All)
            .cloned()
            .unwrap_or_default();
        if let Some(own) = self.options.active.get(&Target::Route(route)) {
            options.extend(own.iter().map(|(k, v)| (*k, v.clone())));
        }
        RouteSettings {
            response_headers: headers.into_values().collect(),
            options,
            health: self.health.active.get(&route).cloned(),
            rate_limit: pick(&self.ratelimit.active, route),
            circuit_breaker: pick(&self.breaker.active, route),
        }
    }

    /// The settings part of CONFIG_DIFF.
    pub fn diff_json(&self) -> serde_json::Value {
        let flat = |h: &Headers| -> BTreeMap<(Target, String), String> {
            h.iter()
                .flat_map(|(t, m)| {
                    m.iter()
                        .map(move |(k, (_, v))| ((*t, k.clone()), v.clone()))
                })
                .collect()
        };
        let (added, removed) = match &self.headers.staged {
            None => (0, 0),
            Some(staged) => {
                let (old, new) = (flat(&self.headers.active), flat(staged));
                (
                    new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).count(),
                    old.keys().filter(|k| !new.contains_key(*k)).count(),
                )
            }
        };
        let opts_flat = |o: &Options| -> BTreeMap<(Target, OptionKey), OptionValue> {
            o.iter()
                .flat_map(|(t, m)| m.iter().map(move |(k, v)| ((*t, *k), v.clone())))
                .collect()
        };
        serde_json::json!({
            "headers": {"added": added, "removed": removed},
            "options": {"modified": modified(&self.options, |o| opts_flat(o))},
            "health": {"modified": modified(&self.health, |h| h.clone())},
            "ratelimit": {"modified": modified(&self.ratelimit, |r| r.clone())},
            "circuit_breaker": {"modified": modified(&self.breaker, |b| b.clone())},
        })
    }
}

/// Entries added, changed or removed between active and staged.
fn modified<T, K: Ord, V: PartialEq>(
    scoped: &Scoped<T>,
    flat: impl Fn(&T) -> BTreeMap<K, V>,
) -> usize {
    let Some(staged) = &scoped.staged else {
        return 0;
    };
    let (old, new) = (flat(&scoped.active), flat(staged));
    let changed = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).count();
    changed + old.keys().filter(|k| !new.contains_key(*k)).count()
}
