use super::*;
use crate::protocol::{HealthCheck, OptionKey, OptionValue, Target};
use portico_proto::{v1, BackendUrl};
use std::time::Duration;

fn session() -> SessionState {
    SessionState::new(Identity {
        id: "s1".into(),
        service: "svc".into(),
        instance: "i1".into(),
        maintenance_port: 0,
        metadata: Map::new(),
        peer_ip: None,
        connected_at: SystemTime::UNIX_EPOCH,
        token: None,
    })
}

fn route(host: &str, backend: &str) -> RouteInput {
    RouteInput {
        domains: vec![host.into()],
        path: "/".into(),
        backend: BackendUrl::parse(backend).unwrap(),
        priority: 0,
    }
}

/// Route ids r1, r2, ... as the directory would allocate them.
fn ids_from_1() -> impl FnMut() -> RouteId {
    let mut next = 0;
    move || {
        next += 1;
        RouteId(next)
    }
}

fn statuses(s: &SessionState) -> Vec<(String, String)> {
    s.list_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["route_id"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn add_is_idempotent_for_identical_routes() {
    let mut s = session();
    let mut alloc = ids_from_1();
    let a = s.add_route(route("a.com", "http://a"), &mut alloc);
    let again = s.add_route(route("a.com", "http://a"), &mut alloc);
    assert_eq!(a, again);
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(s.add_route(route("a.com", "http://a"), &mut alloc), a);
    let b = s.add_route(route("a.com", "http://b"), &mut alloc);
    assert_ne!(a, b);
}

#[test]
fn identical_routes_are_found_through_updates_removals_and_many_adds() {
    let mut s = session();
    let mut alloc = ids_from_1();
    let ids: Vec<RouteId> = (0..500)
        .map(|i| s.add_route(route(&format!("h{i}.com"), "http://a"), &mut alloc))
        .collect();
    assert_eq!(
        s.add_route(route("h250.com", "http://a"), &mut alloc),
        ids[250]
    );
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    // A route being changed is no longer "identical" in its active form...
    for _ in 0..200 {
        s.update_route(ids[7], RouteField::Priority(3)).unwrap();
        s.update_route(ids[7], RouteField::Priority(0)).unwrap();
    }
    s.update_route(ids[7], RouteField::Priority(3)).unwrap();
    let fresh = s.add_route(route("h7.com", "http://a"), &mut alloc);
    assert_ne!(fresh, ids[7]);
    // ...but its staged form is.
    let mut staged = route("h7.com", "http://a");
    staged.priority = 3;
    assert_eq!(s.add_route(staged, &mut alloc), ids[7]);
    // A route pending removal is not reused.
    s.remove_route(ids[9]).unwrap();
    assert_ne!(s.add_route(route("h9.com", "http://a"), &mut alloc), ids[9]);
    assert_eq!(
        s.add_route(route("h499.com", "http://a"), &mut alloc),
        ids[499]
    );
}

#[test]
fn list_shows_every_status() {
    let mut s = session();
    let mut n = 0;
    let mut alloc = || {
        n += 1;
        RouteId(n)
    };
    let r1 = s.add_route(route("a.com", "http://a"), &mut alloc);
    let r2 = s.add_route(route("b.com", "http://b"), &mut alloc);
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    s.remove_route(r1).unwrap();
    s.staged
        .insert(r2, Staged::Upsert(route("b.com", "http://c")));
    let _r3 = s.add_route(route("c.com", "http://c"), &mut alloc);
    assert_eq!(
        statuses(&s),
        vec![
            ("r1".into(), "pending_removal".into()),
            ("r2".into(), "modified".into()),
            ("r3".into(), "staged".into())
        ]
    );
    assert_eq!(s.remove_route(r1), Err(SessionError::RouteNotFound));
    s.rollback();
    assert_eq!(
        statuses(&s),
        vec![
            ("r1".into(), "active".into()),
            ("r2".into(), "active".into())
        ]
    );
}

#[test]
fn removing_a_staged_route_unstages_it() {
    let mut s = session();
    let id = s.add_route(route("a.com", "http://a"), || RouteId(7));
    s.remove_route(id).unwrap();
    assert_eq!(s.routes_staged(), 0);
    assert_eq!(s.remove_route(id), Err(SessionError::RouteNotFound));
    assert_eq!(
        s.remove_route(RouteId(99)),
        Err(SessionError::RouteNotFound)
    );
}

#[test]
fn settings_stage_apply_partially_and_resolve_per_route() {
    let mut s = session();
    let r1 = s.add_route(route("a.com", "http://a"), || RouteId(1));
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    s.settings
        .headers
        .edit()
        .entry(Target::All)
        .or_default()
        .insert("x-a".into(), ("X-A".into(), "all".into()));
    s.settings
        .headers
        .edit()
        .entry(Target::Route(r1))
        .or_default()
        .insert("x-a".into(), ("X-A".into(), "mine".into()));
    s.settings
        .options
        .edit()
        .entry(Target::All)
        .or_default()
        .insert(OptionKey::Retries, OptionValue::Count(2));
    let diff = s.diff_json();
    assert_eq!(diff["headers"]["added"], 2);
    assert_eq!(diff["options"]["modified"], 1);
    // Apply only headers: options stay staged.
    let headers_only = Scopes {
        headers: true,
        ..Default::default()
    };
    s.commit(s.propose(headers_only).unwrap(), SystemTime::UNIX_EPOCH);
    let resolved = v1::RouteSettings::from(&s.settings.resolve(r1));
    assert_eq!(
        resolved.response_headers,
        vec![v1::Header {
            name: "X-A".into(),
            value: "mine".into()
        }]
    );
    assert!(resolved.options.is_empty());
    assert_eq!(s.diff_json()["options"]["modified"], 1);
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        v1::RouteSettings::from(&s.settings.resolve(r1)).options,
        vec![v1::Option {
            key: "retries".into(),
            value: "2".into()
        }]
    );
}

#[test]
fn settings_for_a_route_being_removed_are_refused() {
    let mut s = session();
    let r1 = s.add_route(route("a.com", "http://a"), || RouteId(1));
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    s.settings.health.edit().insert(
        r1,
        HealthCheck {
            path: "/h".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        },
    );
    s.remove_route(r1).unwrap();
    assert_eq!(
        s.propose(Scopes::EVERYTHING).unwrap_err(),
        SessionError::Dangling(r1, "health check")
    );
    // A staged route is not active for a partial apply without routes.
    let mut s = session();
    let r2 = s.add_route(route("b.com", "http://b"), || RouteId(2));
    s.settings.health.edit().insert(
        r2,
        HealthCheck {
            path: "/h".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        },
    );
    let health_only = Scopes {
        health: true,
        ..Default::default()
    };
    assert_eq!(
        s.propose(health_only).unwrap_err(),
        SessionError::Dangling(r2, "health check")
    );
    assert!(s.propose(Scopes::EVERYTHING).is_ok());
}

#[test]
fn maintenance_targets_resolve_to_active_routes() {
    let mut s = session();
    let mut n = 0;
    let mut alloc = || {
        n += 1;
        RouteId(n)
    };
    let a = s.add_route(route("a.com", "http://a"), &mut alloc);
    let mut admin = route("b.com", "http://b");
    admin.path = "/admin".into();
    let b = s.add_route(admin, &mut alloc);
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    let staged_only = s.add_route(route("c.com", "http://c"), &mut alloc);
    assert_eq!(
        s.maintenance_targets(&MaintTarget::All).unwrap(),
        vec![a, b]
    );
    assert_eq!(
        s.maintenance_targets(&MaintTarget::Path("/admin".into()))
            .unwrap(),
        vec![b]
    );
    assert_eq!(
        s.maintenance_targets(&MaintTarget::Domain("a.com".into()))
            .unwrap(),
        vec![a]
    );
    assert_eq!(
        s.maintenance_targets(&MaintTarget::Routes(vec![staged_only])),
        Err(SessionError::RouteNotFound)
    );
    assert_eq!(
        s.maintenance_targets(&MaintTarget::Path("/none".into())),
        Err(SessionError::NoMatch("/none".into()))
    );
}

#[test]
fn update_stages_a_modification_and_undoes_to_active() {
    let mut s = session();
    let r1 = s.add_route(route("a.com", "http://a"), || RouteId(1));
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    s.update_route(r1, RouteField::Priority(5)).unwrap();
    assert_eq!(statuses(&s), vec![("r1".into(), "modified".into())]);
    s.update_route(r1, RouteField::Priority(0)).unwrap();
    assert_eq!(statuses(&s), vec![("r1".into(), "active".into())]);
    assert_eq!(
        s.update_route(RouteId(9), RouteField::Priority(1)),
        Err(SessionError::RouteNotFound)
    );
}

#[test]
fn drain_ramps_linearly() {
    let d = Drain {
        started_at: SystemTime::UNIX_EPOCH,
        duration: Duration::from_secs(10),
    };
    assert_eq!(d.weight_at(SystemTime::UNIX_EPOCH), 1.0);
    assert_eq!(
        d.weight_at(SystemTime::UNIX_EPOCH + Duration::from_secs(4)),
        0.6
    );
    assert_eq!(
        d.weight_at(SystemTime::UNIX_EPOCH + Duration::from_secs(30)),
        0.0
    );
}

#[test]
fn routes_proposed_counts_what_an_apply_would_leave() {
    let mut s = session();
    let mut alloc = ids_from_1();
    let a = s.add_route(route("a.com", "http://a"), &mut alloc);
    s.add_route(route("b.com", "http://b"), &mut alloc);
    assert_eq!(s.routes_proposed(), 2);
    assert_eq!(s.routes_at_most(), 2);
    assert!(s.has_identical(&route("a.com", "http://a")));
    assert!(!s.has_identical(&route("a.com", "http://other")));
    s.commit(
        s.propose(Scopes::EVERYTHING).unwrap(),
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(s.routes_proposed(), 2);
    s.update_route(a, RouteField::Priority(5)).unwrap();
    assert_eq!(s.routes_proposed(), 2, "a modified route is not a new one");
    s.remove_route(a).unwrap();
    s.add_route(route("c.com", "http://c"), &mut alloc);
    s.add_route(route("d.com", "http://d"), &mut alloc);
    assert_eq!(s.routes_proposed(), 3);
    assert_eq!(
        s.routes_at_most(),
        5,
        "the cheap bound counts every staged change as an addition"
    );
}
