//! The pushed versions: the routes at the current version (shared with the
//! global configuration) and the route ids each recent version changed, so a
//! data plane that comes back gets one delta of what it missed. Pure.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use portico_proto::time::unix_ms;
use portico_proto::v1;

use crate::global::Commit;

/// Versions whose changed route ids are kept, so a data plane that reconnects
/// gets one delta of what changed since its version; older ones get a snapshot.
pub const HISTORY: usize = 4096;
/// ... and at most this many route ids in them, to bound memory.
const HISTORY_ROUTES: usize = 200_000;

pub struct History {
    version: u64,
    /// Shared with the global configuration, not copies.
    routes: HashMap<String, Arc<v1::Route>>,
    /// Recent pushes, oldest first: (version, ids changed since version - 1).
    changed: VecDeque<(u64, Vec<String>)>,
    changed_routes: usize,
}

impl History {
    /// Starts at the stored `version` with its `routes`.
    pub fn new(version: u64, routes: Vec<Arc<v1::Route>>) -> Self {
        History {
            version,
            routes: routes
                .into_iter()
                .map(|r| (r.route_id.clone(), r))
                .collect(),
            changed: VecDeque::new(),
            changed_routes: 0,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// What a data plane holding `applied` needs: one delta of every route
    /// changed since then, when those versions are all kept, else a snapshot.
    pub fn catch_up(&self, applied: u64) -> v1::ControlPlaneMessage {
        if applied == self.version && applied > 0 {
            // Up to date (e.g. started from its cache): an empty delta confirms it.
            return push(
                self.version,
                applied,
                v1::config_push::Body::Delta(v1::Delta::default()),
            );
        }
        let first = self.changed.front().map(|(v, _)| *v);
        if applied > 0 && applied < self.version && first.is_some_and(|first| first <= applied + 1)
        {
            let changed: HashSet<&String> = self
                .changed
                .iter()
                .filter(|(v, _)| *v > applied)
                .flat_map(|(_, ids)| ids)
                .collect();
            let mut delta = v1::Delta::default();
            for id in changed {
                match self.routes.get(id) {
                    Some(route) => delta.upserted.push(route.as_ref().clone()),
                    None => delta.removed.push(id.clone()),
                }
            }
            return push(self.version, applied, v1::config_push::Body::Delta(delta));
        }
        push(
            self.version,
            0,
            v1::config_push::Body::Snapshot(v1::Snapshot {
                routes: self.routes.values().map(|r| r.as_ref().clone()).collect(),
            }),
        )
    }

    /// Takes a commit into the routes and the history; returns the push for
    /// the data planes and the operators' event (without its recipients).
    pub fn record(&mut self, commit: Commit) -> (v1::ControlPlaneMessage, v1::PushEvent) {
        let Commit {
            version,
            upserted,
            removed,
        } = commit;
        let base = self.version;
        self.version = version;
        let mut event = v1::PushEvent {
            version,
            committed_at_unix_ms: unix_ms(SystemTime::now()),
            removed: removed.clone(),
            ..Default::default()
        };
        for id in &removed {
            self.routes.remove(id);
        }
        for route in &upserted {
            let previous = self.routes.insert(route.route_id.clone(), route.clone());
            let list = if previous.is_some() {
                &mut event.changed
            } else {
                &mut event.added
            };
            list.push(route.route_id.clone());
        }
        // Versions are dense; a gap (never expected) makes history unusable.
        if base + 1 != version {
            self.changed.clear();
            self.changed_routes = 0;
        }
        let changed: Vec<String> = upserted
            .iter()
            .map(|r| r.route_id.clone())
            .chain(removed.iter().cloned())
            .collect();
        self.changed_routes += changed.len();
        self.changed.push_back((version, changed));
        while self.changed.len() > HISTORY || self.changed_routes > HISTORY_ROUTES {
            if let Some((_, old)) = self.changed.pop_front() {
                self.changed_routes -= old.len();
            }
        }
        let delta = v1::Delta {
            upserted: upserted.iter().map(|r| r.as_ref().clone()).collect(),
            removed,
        };
        (
            push(version, base, v1::config_push::Body::Delta(delta)),
            event,
        )
    }

    /// Every route at the current version, in route-id order.
    pub fn snapshot(&self) -> v1::GetSnapshotResponse {
        let mut routes: Vec<v1::Route> = self.routes.values().map(|r| r.as_ref().clone()).collect();
        routes.sort_by_key(|r| portico_proto::model::parse_route_id(&r.route_id).unwrap_or(0));
        v1::GetSnapshotResponse {
            version: self.version,
            snapshot: Some(v1::Snapshot { routes }),
        }
    }
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

    fn route(id: &str, backend: &str) -> Arc<v1::Route> {
        Arc::new(v1::Route {
            route_id: id.to_string(),
            domains: vec![format!("{id}.test")],
            path: "/".to_string(),
            backend_url: backend.to_string(),
            ..Default::default()
        })
    }

    fn commit(version: u64, upserted: Vec<Arc<v1::Route>>, removed: &[&str]) -> Commit {
        Commit {
            version,
            upserted,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn parts(message: &v1::ControlPlaneMessage) -> (u64, u64, &v1::config_push::Body) {
        let Some(v1::control_plane_message::Msg::Push(p)) = &message.msg else {
            panic!("not a push: {message:?}");
        };
        (p.version, p.base_version, p.body.as_ref().expect("a body"))
    }

    #[test]
    fn a_data_plane_behind_gets_one_delta_of_what_changed_since_its_version() {
        let mut h = History::new(0, Vec::new());
        h.record(commit(
            1,
            vec![route("r1", "http://a"), route("r2", "http://a")],
            &[],
        ));
        h.record(commit(2, vec![route("r1", "http://b")], &["r2"]));
        h.record(commit(3, vec![route("r3", "http://a")], &[]));

        let push = h.catch_up(1);
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

        let current = h.catch_up(3);
        let (_, _, body) = parts(&current);
        assert_eq!(body, &v1::config_push::Body::Delta(v1::Delta::default()));
        let fresh = h.catch_up(0);
        let (version, base, body) = parts(&fresh);
        assert_eq!((version, base), (3, 0));
        let v1::config_push::Body::Snapshot(snapshot) = body else {
            panic!("a snapshot: {body:?}");
        };
        assert_eq!(snapshot.routes.len(), 2);
    }

    #[test]
    fn a_data_plane_older_than_the_history_gets_a_snapshot() {
        let mut h = History::new(0, Vec::new());
        for v in 1..=(HISTORY as u64 + 2) {
            h.record(commit(v, vec![route(&format!("r{v}"), "http://a")], &[]));
        }
        let old = h.catch_up(1);
        let (_, base, body) = parts(&old);
        assert_eq!(base, 0);
        assert!(matches!(body, v1::config_push::Body::Snapshot(_)));
        let recent = h.catch_up(3);
        let (_, base, body) = parts(&recent);
        assert_eq!(base, 3);
        assert!(matches!(body, v1::config_push::Body::Delta(d) if d.upserted.len() == HISTORY - 1));
    }
}
