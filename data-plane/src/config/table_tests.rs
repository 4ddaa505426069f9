use super::*;
use std::net::SocketAddr;
use std::time::Duration;

fn route(
    id: &str,
    service: &str,
    hosts: &[&str],
    path: &str,
    backend: &str,
    priority: i64,
) -> Arc<RouteSpec> {
    Arc::new(RouteSpec {
        priority,
        ..RouteSpec::for_test(id, service, hosts, path, backend)
    })
}

fn compile(routes: &[Arc<RouteSpec>]) -> RouteTable {
    RouteTable::compile(routes, &Registry::default()).unwrap()
}

fn served_by(table: &RouteTable, host: &str, path: &str) -> Option<String> {
    table.lookup(host, path).map(|p| {
        p.entries
            .iter()
            .map(|b| b.spec.route_id.clone())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Every address of the route's backend fails its probe.
fn down(route: &RouteEntry) {
    for e in route.backend.endpoints().list.iter() {
        e.set_healthy(false);
    }
}

fn pick(pool: &Pool, now: SystemTime) -> String {
    match pool.choose(now, &[]) {
        Choice::Route(e) => e.spec.route_id.clone(),
        Choice::Maintenance(e) => format!("maint:{}", e.spec.route_id),
        Choice::Unavailable(why) => why.to_string(),
    }
}

#[test]
fn exact_over_wildcard_then_priority_then_longest_prefix() {
    let routes = [
        route(
            "r1",
            "a",
            &["*.example.com"],
            "/",
            "http://127.0.0.1:1",
            100,
        ),
        route(
            "r2",
            "a",
            &["api.example.com"],
            "/",
            "http://127.0.0.1:2",
            0,
        ),
        route(
            "r3",
            "a",
            &["api.example.com"],
            "/v1",
            "http://127.0.0.1:3",
            0,
        ),
        route(
            "r4",
            "a",
            &["api.example.com"],
            "/v1/admin",
            "http://127.0.0.1:4",
            0,
        ),
        route(
            "r5",
            "a",
            &["api.example.com"],
            "/low",
            "http://127.0.0.1:5",
            5,
        ),
    ];
    let t = compile(&routes);
    assert_eq!(
        served_by(&t, "api.example.com", "/v1/users").as_deref(),
        Some("r3")
    );
    assert_eq!(
        served_by(&t, "api.example.com", "/v1/admin/x").as_deref(),
        Some("r4")
    );
    assert_eq!(
        served_by(&t, "api.example.com", "/v1x").as_deref(),
        Some("r2")
    );
    assert_eq!(
        served_by(&t, "api.example.com", "/low/a").as_deref(),
        Some("r5")
    );
    assert_eq!(served_by(&t, "www.example.com", "/").as_deref(), Some("r1"));
    assert_eq!(served_by(&t, "a.b.example.com", "/").as_deref(), Some("r1"));
    assert_eq!(served_by(&t, "example.com", "/"), None);
    assert_eq!(served_by(&t, "other.org", "/"), None);
}

#[test]
fn instances_of_a_service_share_a_pool_round_robin() {
    let routes = [
        route("r1", "web", &["a.com"], "/", "http://127.0.0.1:1", 0),
        route("r2", "web", &["a.com"], "/", "http://127.0.0.1:2", 0),
    ];
    let t = compile(&routes);
    let pool = t.lookup("a.com", "/x").unwrap();
    let now = SystemTime::now();
    let picks: Vec<String> = (0..4).map(|_| pick(pool, now)).collect();
    assert_eq!(picks, vec!["r1", "r2", "r1", "r2"]);
    let first = pool.entries[0].backend.pick(None, now).unwrap();
    assert_eq!(first.addr, "127.0.0.1:1".parse().unwrap());
}

#[test]
fn drain_shifts_weight_and_a_lone_drained_backend_keeps_serving() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut draining = (*route("r1", "web", &["a.com"], "/", "http://127.0.0.1:1", 0)).clone();
    draining.drain = Some(Drain {
        started_at: start,
        duration: Duration::from_secs(10),
    });
    let routes = [
        Arc::new(draining.clone()),
        route("r2", "web", &["a.com"], "/", "http://127.0.0.1:2", 0),
    ];
    let t = compile(&routes);
    let pool = t.lookup("a.com", "/").unwrap();
    let share = |at: SystemTime| (0..1000).filter(|_| pick(pool, at) == "r1").count();
    assert!((495..=505).contains(&share(start)), "{}", share(start));
    let quarter = share(start + Duration::from_millis(7500));
    assert!(
        (195..=205).contains(&quarter),
        "25% of weight is a fifth of traffic: {quarter}"
    );
    assert_eq!(share(start + Duration::from_secs(11)), 0);
    let alone = compile(&[Arc::new(draining)]);
    assert_eq!(
        pick(
            alone.lookup("a.com", "/").unwrap(),
            start + Duration::from_secs(60)
        ),
        "r1"
    );
}

#[test]
fn unhealthy_and_maintenance_backends_leave_the_choice() {
    let mut maint = (*route("r2", "web", &["a.com"], "/", "http://127.0.0.1:2", 0)).clone();
    maint.maintenance = Some(portico_proto::settings::Maintenance {
        backend: None,
        entered_at: SystemTime::UNIX_EPOCH,
    });
    let routes = [
        route("r1", "web", &["a.com"], "/", "http://127.0.0.1:1", 0),
        Arc::new(maint),
    ];
    let t = compile(&routes);
    let pool = t.lookup("a.com", "/").unwrap();
    let now = SystemTime::now();
    assert!((0..10).all(|_| pick(pool, now) == "r1"));
    down(&pool.entries[0]);
    assert_eq!(pick(pool, now), "maint:r2");
    let t = compile(&[route("r3", "web", &["b.com"], "/", "http://127.0.0.1:3", 0)]);
    let pool = t.lookup("b.com", "/").unwrap();
    down(&pool.entries[0]);
    assert_eq!(pick(pool, now), "every backend is unhealthy");
}

#[test]
fn a_delta_rebuilds_only_the_hosts_it_names() {
    let registry = Registry::default();
    let routes = [
        route("r1", "web", &["a.com"], "/", "http://127.0.0.1:1", 0),
        route("r2", "web", &["b.com"], "/", "http://127.0.0.1:2", 0),
        route("r3", "web", &["*.c.com"], "/", "http://127.0.0.1:3", 0),
    ];
    let t1 = RouteTable::compile(&routes, &registry).unwrap();
    // r1 moves from a.com to d.com; r3 goes; b.com is untouched.
    let moved = route("r1", "web", &["d.com"], "/", "http://127.0.0.1:1", 0);
    let t2 = t1
        .with_changes(&[&moved], &[&*routes[0], &*routes[2]], &registry)
        .unwrap();
    assert_eq!(served_by(&t2, "a.com", "/"), None);
    assert_eq!(served_by(&t2, "d.com", "/").as_deref(), Some("r1"));
    assert_eq!(served_by(&t2, "x.c.com", "/"), None);
    assert_eq!(served_by(&t2, "b.com", "/").as_deref(), Some("r2"));
    assert!(
        Arc::ptr_eq(
            t1.lookup("b.com", "/").unwrap(),
            t2.lookup("b.com", "/").unwrap()
        ),
        "untouched pools are shared"
    );
    assert_eq!(t2.len(), 2);
    // The old table is unchanged: requests in flight keep their version.
    assert_eq!(served_by(&t1, "a.com", "/").as_deref(), Some("r1"));
    assert_eq!(served_by(&t1, "x.c.com", "/").as_deref(), Some("r3"));
    // A route joining an existing host's pool.
    let joining = route("r4", "web", &["b.com"], "/", "http://127.0.0.1:4", 0);
    let t3 = t2.with_changes(&[&joining], &[], &registry).unwrap();
    assert_eq!(served_by(&t3, "b.com", "/").as_deref(), Some("r2,r4"));
}

#[test]
fn every_route_is_listed_once_whatever_its_domains() {
    let routes = [
        route(
            "r1",
            "web",
            &["a.com", "*.b.com", "c.com"],
            "/",
            "http://127.0.0.1:1",
            0,
        ),
        route("r2", "web", &["*.d.com"], "/x", "http://127.0.0.1:2", 0),
        route("r3", "api", &["a.com"], "/api", "http://127.0.0.1:3", 0),
    ];
    let t = RouteTable::compile(&routes, &Registry::default()).unwrap();
    let mut ids: Vec<&str> = t.routes().map(|r| r.spec.route_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    assert_eq!(t.len(), 3);
    let t2 = t
        .with_changes(&[], &[&*routes[0]], &Registry::default())
        .unwrap();
    let ids: Vec<&str> = t2.routes().map(|r| r.spec.route_id.as_str()).collect();
    assert_eq!((ids.len(), t2.len()), (2, 2));
    assert_eq!(served_by(&t2, "x.b.com", "/"), None);
}

#[test]
fn a_lone_route_follows_the_same_rules() {
    let mut maint = (*route("r1", "web", &["a.com"], "/", "http://127.0.0.1:1", 0)).clone();
    maint.maintenance = Some(portico_proto::settings::Maintenance {
        backend: None,
        entered_at: SystemTime::UNIX_EPOCH,
    });
    let t = compile(&[Arc::new(maint)]);
    assert_eq!(
        pick(t.lookup("a.com", "/").unwrap(), SystemTime::now()),
        "maint:r1"
    );
    let t = compile(&[route("r2", "web", &["b.com"], "/", "http://127.0.0.1:2", 0)]);
    let pool = t.lookup("b.com", "/").unwrap();
    assert_eq!(pick(pool, SystemTime::now()), "r2");
    assert!(matches!(
        pool.choose(SystemTime::now(), &["r2".to_string()]),
        Choice::Unavailable("no backend available")
    ));
}

#[test]
fn an_unresolved_name_serves_only_when_nothing_else_can() {
    let routes = [
        route("r1", "web", &["a.com"], "/", "http://app.invalid:80", 0),
        route("r2", "web", &["a.com"], "/", "http://127.0.0.1:2", 0),
    ];
    let t = compile(&routes);
    let pool = t.lookup("a.com", "/").unwrap();
    let now = SystemTime::now();
    assert!((0..10).all(|_| pick(pool, now) == "r2"));
    down(&pool.entries[1]);
    assert_eq!(
        pick(pool, now),
        "r1",
        "its request fails as unresolved (502)"
    );
    // Resolved, it takes its share, without a new table.
    pool.entries[0]
        .backend
        .name
        .succeeded(["127.0.0.9".parse().unwrap()], Duration::from_secs(5));
    for e in pool.entries[1].backend.endpoints().list.iter() {
        e.set_healthy(true);
    }
    let picks: Vec<String> = (0..4).map(|_| pick(pool, now)).collect();
    assert!(picks.contains(&"r1".to_string()) && picks.contains(&"r2".to_string()));
}

#[test]
fn a_name_with_two_addresses_spreads_over_the_healthy_ones() {
    let registry = Registry::default();
    let r = route("r1", "web", &["a.com"], "/", "http://app.test:80", 0);
    let t = RouteTable::compile([&r], &registry).unwrap();
    let entry = &t.lookup("a.com", "/").unwrap().entries[0];
    let now = SystemTime::now();
    assert!(entry.backend.pick(None, now).is_none(), "no addresses yet");
    let (a, b) = (
        "10.0.0.1:80".parse().unwrap(),
        "10.0.0.2:80".parse().unwrap(),
    );
    let name = &entry.backend.name;
    name.succeeded([b, a].map(|s: SocketAddr| s.ip()), Duration::from_secs(5));
    let addrs: Vec<SocketAddr> = (0..4)
        .map(|_| entry.backend.pick(None, now).unwrap().addr)
        .collect();
    assert_eq!(addrs.iter().filter(|x| **x == a).count(), 2);
    assert_eq!(addrs.iter().filter(|x| **x == b).count(), 2);
    // One address down: only the other serves, and its state survives a
    // change that keeps it.
    let eps = entry.backend.endpoints();
    eps.list
        .iter()
        .find(|e| e.addr == a)
        .unwrap()
        .set_healthy(false);
    assert!((0..4).all(|_| entry.backend.pick(None, now).unwrap().addr == b));
    let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
    name.succeeded([a, c].map(|s| s.ip()), Duration::from_secs(5));
    let eps = entry.backend.endpoints();
    assert_eq!(eps.list.len(), 2);
    assert!(!eps.list.iter().find(|e| e.addr == a).unwrap().healthy());
    assert!((0..4).all(|_| entry.backend.pick(None, now).unwrap().addr == c));
}
