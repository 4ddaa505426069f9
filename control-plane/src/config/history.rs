//! The version history: the route ids (and certificate names and challenge
//! tokens) each recent version changed, so a data plane that comes back
//! gets one delta of what it missed, and the pushes built from commits.
//! Pure; the contents themselves belong to the global configuration.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use portico_proto::time::unix_ms;
use portico_proto::{v1, RouteSpec};

/// What one commit changed, at which version. Upserted routes are shared
/// with the global configuration rather than copied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commit {
    pub version: u64,
    /// The version it follows: `version - 1`, or older when it took in
    /// several versions another replica wrote.
    pub base: u64,
    pub upserted: Vec<Arc<RouteSpec>>,
    /// The upserted route ids that are new (the rest changed).
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub tls: TlsChange,
}

/// Certificates and ACME challenges a commit changed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsChange {
    pub certificates: Vec<Arc<v1::Certificate>>,
    /// Certificate names.
    pub certificates_removed: Vec<String>,
    pub challenges: Vec<v1::AcmeChallenge>,
    /// Challenge tokens.
    pub challenges_removed: Vec<String>,
}

impl TlsChange {
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
            && self.certificates_removed.is_empty()
            && self.challenges.is_empty()
            && self.challenges_removed.is_empty()
    }

    /// What changed, as the history keeps it.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        let certs = self.certificates.iter().map(|c| c.name.as_str());
        let challenges = self.challenges.iter().map(|c| c.token.as_str());
        certs
            .chain(self.certificates_removed.iter().map(String::as_str))
            .map(|n| Key::Cert(n.to_string()))
            .chain(
                challenges
                    .chain(self.challenges_removed.iter().map(String::as_str))
                    .map(|t| Key::Challenge(t.to_string())),
            )
    }
}

/// One thing a version changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Route(String),
    Cert(String),
    Challenge(String),
}

/// The certificates (by name) and challenges (token -> key authorization)
/// of one version.
#[derive(Default)]
pub struct Tls {
    pub certificates: BTreeMap<String, Arc<v1::Certificate>>,
    pub challenges: BTreeMap<String, String>,
    /// The version each certificate came in with: a data plane that
    /// acknowledged it serves the certificate.
    pub since: BTreeMap<String, u64>,
}

impl Tls {
    fn challenge(token: &str, key_authorization: &str) -> v1::AcmeChallenge {
        v1::AcmeChallenge {
            token: token.to_string(),
            key_authorization: key_authorization.to_string(),
        }
    }

    /// Everything, as a snapshot carries it.
    fn fill(&self, snapshot: &mut v1::Snapshot) {
        snapshot.certificates = self
            .certificates
            .values()
            .map(|c| c.as_ref().clone())
            .collect();
        snapshot.challenges = self
            .challenges
            .iter()
            .map(|(t, k)| Self::challenge(t, k))
            .collect();
    }

    /// What of `changed` is here (upserted) or gone (removed).
    fn fill_delta(&self, changed: &HashSet<&Key>, delta: &mut v1::Delta) {
        for key in changed {
            match key {
                Key::Cert(name) => match self.certificates.get(name) {
                    Some(c) => delta.certificates_upserted.push(c.as_ref().clone()),
                    None => delta.certificates_removed.push(name.clone()),
                },
                Key::Challenge(token) => match self.challenges.get(token) {
                    Some(k) => delta.challenges_upserted.push(Self::challenge(token, k)),
                    None => delta.challenges_removed.push(token.clone()),
                },
                Key::Route(_) => {}
            }
        }
    }
}

/// Versions whose changed route ids are kept, so a data plane that reconnects
/// gets one delta of what changed since its version; older ones get a snapshot.
pub const HISTORY: usize = 4096;
/// ... and at most this many route ids in them, to bound memory.
const HISTORY_ROUTES: usize = 200_000;

pub struct History {
    /// Recent versions, oldest first: (base, version, what changed since
    /// base), where base is the version before (or older, when one entry
    /// took in several versions at once).
    changed: VecDeque<(u64, u64, Vec<Key>)>,
    changed_routes: usize,
}

impl History {
    pub fn new() -> Self {
        History {
            changed: VecDeque::new(),
            changed_routes: 0,
        }
    }

    /// Keeps what changed from `base` to `version`; the oldest versions go
    /// beyond the bounds.
    pub fn record(&mut self, base: u64, version: u64, ids: Vec<Key>) {
        // Entries chain; a gap (never expected) makes the history unusable.
        if self
            .changed
            .back()
            .is_some_and(|(_, last, _)| *last != base)
        {
            self.changed.clear();
            self.changed_routes = 0;
        }
        self.changed_routes += ids.len();
        self.changed.push_back((base, version, ids));
        while self.changed.len() > HISTORY || self.changed_routes > HISTORY_ROUTES {
            if let Some((_, _, old)) = self.changed.pop_front() {
                self.changed_routes -= old.len();
            }
        }
    }

    /// (versions, route ids) kept.
    pub fn counts(&self) -> (usize, usize) {
        (self.changed.len(), self.changed_routes)
    }

    /// What changed after `applied`, when every version since is kept.
    pub fn changed_since(&self, applied: u64) -> Option<HashSet<&Key>> {
        let first = self.changed.front().map(|(base, _, _)| *base)?;
        (applied > 0 && first <= applied).then(|| {
            self.changed
                .iter()
                .filter(|(_, v, _)| *v > applied)
                .flat_map(|(_, _, ids)| ids.iter())
                .collect()
        })
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// What a data plane holding `applied` needs to reach `version`, whose
/// routes `routes` yields and whose certificates and challenges are `tls`:
/// an empty delta when it is there, one delta of what changed when the
/// history covers it, else a snapshot.
pub fn catch_up<'a>(
    history: &History,
    version: u64,
    applied: u64,
    routes: impl Iterator<Item = &'a Arc<RouteSpec>>,
    tls: &Tls,
) -> v1::ControlPlaneMessage {
    if applied == version && applied > 0 {
        // Up to date (e.g. started from its cache): an empty delta confirms it.
        return push(
            version,
            applied,
            v1::config_push::Body::Delta(v1::Delta::default()),
        );
    }
    if applied < version {
        if let Some(changed) = history.changed_since(applied) {
            let mut delta = v1::Delta::default();
            let changed_routes: HashSet<&str> = changed
                .iter()
                .filter_map(|k| match k {
                    Key::Route(id) => Some(id.as_str()),
                    _ => None,
                })
                .collect();
            let mut found = HashSet::new();
            for route in routes.filter(|r| changed_routes.contains(r.route_id.as_str())) {
                found.insert(route.route_id.as_str());
                delta.upserted.push(v1::Route::from(route.as_ref()));
            }
            delta.removed = changed_routes
                .iter()
                .filter(|id| !found.contains(*id))
                .map(|id| id.to_string())
                .collect();
            tls.fill_delta(&changed, &mut delta);
            return push(version, applied, v1::config_push::Body::Delta(delta));
        }
    }
    let mut snapshot = v1::Snapshot {
        routes: routes.map(|r| v1::Route::from(r.as_ref())).collect(),
        ..Default::default()
    };
    tls.fill(&mut snapshot);
    push(version, 0, v1::config_push::Body::Snapshot(snapshot))
}

/// The push of one commit, and the operators' event (without recipients).
pub fn publish(commit: &Commit) -> (v1::ControlPlaneMessage, v1::PushEvent) {
    let mut event = v1::PushEvent {
        version: commit.version,
        committed_at_unix_ms: unix_ms(SystemTime::now()),
        removed: commit.removed.clone(),
        ..Default::default()
    };
    for route in &commit.upserted {
        let id = route.route_id.clone();
        if commit.added.contains(&id) {
            event.added.push(id);
        } else {
            event.changed.push(id);
        }
    }
    let tls = &commit.tls;
    let delta = v1::Delta {
        upserted: commit
            .upserted
            .iter()
            .map(|r| v1::Route::from(r.as_ref()))
            .collect(),
        removed: commit.removed.clone(),
        certificates_upserted: tls
            .certificates
            .iter()
            .map(|c| c.as_ref().clone())
            .collect(),
        certificates_removed: tls.certificates_removed.clone(),
        challenges_upserted: tls.challenges.clone(),
        challenges_removed: tls.challenges_removed.clone(),
    };
    let push = push(
        commit.version,
        commit.base,
        v1::config_push::Body::Delta(delta),
    );
    (push, event)
}

fn push(version: u64, base_version: u64, body: v1::config_push::Body) -> v1::ControlPlaneMessage {
    v1::ControlPlaneMessage {
        msg: Some(v1::control_plane_message::Msg::Push(v1::ConfigPush {
            version,
            base_version,
            body: Some(body),
            committed_at_unix_ms: unix_ms(SystemTime::now()),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, backend: &str) -> Arc<RouteSpec> {
        Arc::new(RouteSpec::for_test(
            id,
            "x",
            &[&format!("{id}.test")],
            "/",
            backend,
        ))
    }

    fn ids(ids: &[&str]) -> Vec<Key> {
        ids.iter().map(|s| Key::Route(s.to_string())).collect()
    }

    fn parts(message: &v1::ControlPlaneMessage) -> (u64, u64, &v1::config_push::Body) {
        let Some(v1::control_plane_message::Msg::Push(p)) = &message.msg else {
            panic!("not a push: {message:?}");
        };
        (p.version, p.base_version, p.body.as_ref().expect("a body"))
    }

    #[test]
    fn a_data_plane_behind_gets_one_delta_of_what_changed_since_its_version() {
        let mut h = History::new();
        h.record(0, 1, ids(&["r1", "r2"]));
        h.record(1, 2, ids(&["r1", "r2"]));
        h.record(2, 3, ids(&["r3"]));
        // At version 3: r1 moved to b, r2 removed, r3 added.
        let routes = [route("r1", "http://b"), route("r3", "http://a")];

        let push = catch_up(&h, 3, 1, routes.iter(), &Tls::default());
        let (version, base, body) = parts(&push);
        assert_eq!((version, base), (3, 1));
        let v1::config_push::Body::Delta(delta) = body else {
            panic!("a delta: {body:?}");
        };
        let mut upserted: Vec<_> = delta
            .upserted
            .iter()
            .map(|r| (r.route_id.as_str(), r.backend_url.as_str()))
            .collect();
        upserted.sort();
        assert_eq!(upserted, [("r1", "http://b"), ("r3", "http://a")]);
        assert_eq!(delta.removed, ["r2"]);

        let current = catch_up(&h, 3, 3, routes.iter(), &Tls::default());
        let (_, _, body) = parts(&current);
        assert_eq!(body, &v1::config_push::Body::Delta(v1::Delta::default()));
        let fresh = catch_up(&h, 3, 0, routes.iter(), &Tls::default());
        let (version, base, body) = parts(&fresh);
        assert_eq!((version, base), (3, 0));
        let v1::config_push::Body::Snapshot(snapshot) = body else {
            panic!("a snapshot: {body:?}");
        };
        assert_eq!(snapshot.routes.len(), 2);
    }

    #[test]
    fn a_data_plane_older_than_the_history_gets_a_snapshot() {
        let mut h = History::new();
        let last = HISTORY as u64 + 2;
        for v in 1..=last {
            h.record(v - 1, v, vec![Key::Route(format!("r{v}"))]);
        }
        let routes: Vec<_> = (1..=last)
            .map(|v| route(&format!("r{v}"), "http://a"))
            .collect();
        let old = catch_up(&h, last, 1, routes.iter(), &Tls::default());
        let (_, base, body) = parts(&old);
        assert_eq!(base, 0);
        assert!(matches!(body, v1::config_push::Body::Snapshot(_)));
        let recent = catch_up(&h, last, 3, routes.iter(), &Tls::default());
        let (_, base, body) = parts(&recent);
        assert_eq!(base, 3);
        assert!(matches!(body, v1::config_push::Body::Delta(d) if d.upserted.len() == HISTORY - 1));
    }
}
