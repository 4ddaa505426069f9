use super::*;
use portico_proto::BackendUrl;

fn session() -> SessionState {
    SessionState::new(Identity {
        id: "s1".into(),
        service: "svc".into(),
        instance: "i1".into(),
        maintenance_port: 0,
        metadata: Map::new(),
        peer_ip: None,
        connected_at: SystemTime::UNIX_EPOCH,
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
    let mut next = 0;
    let mut alloc = || {
        next += 1;
        RouteId(next)
    };
    let a = s.add_route(route("a.com", "http://a"), &mut alloc);
    let again = s.add_route(route("a.com", "http://a"), &mut alloc);
    assert_eq!(a, again);
    s.commit(s.proposed(), SystemTime::UNIX_EPOCH);
    assert_eq!(s.add_route(route("a.com", "http://a"), &mut alloc), a);
    let b = s.add_route(route("a.com", "http://b"), &mut alloc);
    assert_ne!(a, b);
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
    s.commit(s.proposed(), SystemTime::UNIX_EPOCH);
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
