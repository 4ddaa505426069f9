use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use pingora::http::RequestHeader;
use portico_proto::settings::{
    BreakerSpec, Maintenance, OptionKey, OptionValue, RateLimit, RouteSettings,
};
use portico_proto::BackendUrl;

use super::*;
use crate::backends::runtime::Registry;
use crate::pipeline::chain::{Admission, Answer, Flow, Request, Target};

fn spec(backend: &str, settings: RouteSettings, maintenance: Option<Maintenance>) -> RouteSpec {
    RouteSpec {
        settings,
        maintenance,
        ..RouteSpec::for_test("r1", "web", &["a.test"], "/", backend)
    }
}

fn chain_of(spec: &RouteSpec, registry: &Registry) -> Chain {
    let policy = Policy::new(&spec.settings).unwrap();
    let (runtime, backend) = registry.route(&spec.route_id, &spec.backend);
    route_chain(RouteParts {
        spec,
        policy: &policy,
        maintenance: spec.maintenance.as_ref().map(|m| m.backend.is_some()),
        runtime: &runtime,
        backend: &backend,
        outbound: &registry.outbound,
        geoip: registry.geoip.as_ref(),
    })
}

fn run(chain: &Chain, head: &RequestHeader, upgrade: bool) -> (Flow, Admission) {
    let req = Request {
        head,
        raw_head: None,
        client: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        tls: false,
        https_port: Some(8443),
        upgrade,
        now: SystemTime::now(),
    };
    let mut admission = Admission::default();
    (chain.run(&req, &mut admission), admission)
}

fn get(path: &str) -> RequestHeader {
    let mut head = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    head.insert_header("host", "a.test").unwrap();
    head
}

fn answer(flow: Flow) -> Answer {
    match flow {
        Flow::Answer(a) => a,
        Flow::Next => panic!("expected an answer"),
    }
}

#[test]
fn a_route_chain_holds_only_the_filters_its_settings_use() {
    let registry = Registry::default();
    let plain = spec("http://127.0.0.1:9", RouteSettings::default(), None);
    // Upgrades refused, then the backend chosen.
    assert_eq!(chain_of(&plain, &registry).len(), 2);
    let ws = spec("ws://127.0.0.1:9", RouteSettings::default(), None);
    assert_eq!(chain_of(&ws, &registry).len(), 1);
    let mut settings = RouteSettings {
        rate_limit: Some(RateLimit {
            requests: 2,
            window: Duration::from_secs(60),
        }),
        circuit_breaker: Some(BreakerSpec {
            threshold: 3,
            timeout: Duration::from_secs(5),
            half_open_requests: 1,
        }),
        ..Default::default()
    };
    settings
        .options
        .insert(OptionKey::Websocket, OptionValue::Bool(true));
    let all = spec("http://127.0.0.1:9", settings, None);
    assert_eq!(chain_of(&all, &registry).len(), 3);
    let maint = spec(
        "http://127.0.0.1:9",
        RouteSettings::default(),
        Some(Maintenance {
            backend: None,
            entered_at: SystemTime::now(),
        }),
    );
    assert_eq!(chain_of(&maint, &registry).len(), 1);
}

#[test]
fn a_pool_chain_redirects_only_when_a_route_asks_for_it() {
    let mut policy = Policy::new(&RouteSettings::default()).unwrap();
    assert!(pool_chain([&policy]).is_empty());
    policy.https_redirect = true;
    let chain = pool_chain([&policy]);
    let a = answer(run(&chain, &get("/p?q=1"), false).0);
    assert_eq!(
        (a.status, a.location.as_deref()),
        (308, Some("https://a.test:8443/p?q=1"))
    );
    // A challenge is never redirected.
    let (flow, _) = run(&chain, &get("/.well-known/acme-challenge/t"), false);
    assert_eq!(flow, Flow::Next);
}

#[test]
fn maintenance_answers_the_page_or_sends_to_its_backend() {
    let registry = Registry::default();
    let page = spec(
        "http://127.0.0.1:9",
        RouteSettings::default(),
        Some(Maintenance {
            backend: None,
            entered_at: SystemTime::now(),
        }),
    );
    let a = answer(run(&chain_of(&page, &registry), &get("/"), false).0);
    assert_eq!((a.status, a.retry_after), (503, Some(30)));
    assert!(a.body.contains("Down for maintenance"));
    let elsewhere = spec(
        "http://127.0.0.1:9",
        RouteSettings::default(),
        Some(Maintenance {
            backend: Some(BackendUrl::parse("http://127.0.0.1:10").unwrap()),
            entered_at: SystemTime::now(),
        }),
    );
    let (flow, admission) = run(&chain_of(&elsewhere, &registry), &get("/"), false);
    assert_eq!(flow, Flow::Next);
    assert_eq!(admission.target, Some(Target::Maintenance));
}

#[test]
fn upgrades_are_refused_unless_the_route_allows_them() {
    let registry = Registry::default();
    let plain = chain_of(
        &spec("http://127.0.0.1:9", RouteSettings::default(), None),
        &registry,
    );
    assert_eq!(answer(run(&plain, &get("/"), true).0).status, 400);
    let (flow, admission) = run(&plain, &get("/"), false);
    assert_eq!(flow, Flow::Next);
    assert_eq!(admission.target, Some(Target::Backend { breaker: false }));
}

#[test]
fn the_rate_limit_answers_429_past_its_budget() {
    let registry = Registry::default();
    let settings = RouteSettings {
        rate_limit: Some(RateLimit {
            requests: 2,
            window: Duration::from_secs(60),
        }),
        ..Default::default()
    };
    let chain = chain_of(&spec("http://127.0.0.1:9", settings, None), &registry);
    for _ in 0..2 {
        assert_eq!(run(&chain, &get("/"), false).0, Flow::Next);
    }
    let a = answer(run(&chain, &get("/"), false).0);
    assert_eq!(a.status, 429);
    assert!(a.retry_after.is_some_and(|s| s >= 1));
}

#[test]
fn the_edge_chain_refuses_bad_heads_and_answers_held_challenges() {
    let challenges = acme_challenge::Challenges::default();
    challenges.store(Arc::new(
        [("tok".to_string(), "tok.key".to_string())].into(),
    ));
    let limits = request_checks::HeadLimits {
        count: 100,
        bytes: 65536,
    };
    let chain = edge_chain(limits, challenges);
    let held = get("/.well-known/acme-challenge/tok");
    let a = answer(run(&chain, &held, false).0);
    assert_eq!((a.status, a.body.as_ref()), (200, "tok.key"));
    let other = get("/.well-known/acme-challenge/other");
    assert_eq!(run(&chain, &other, false).0, Flow::Next);
    // HTTP/1.1 without Host: refused, and the connection closed.
    let no_host = RequestHeader::build("GET", b"/", None).unwrap();
    let a = answer(run(&chain, &no_host, false).0);
    assert_eq!((a.status, a.close), (400, true));
}
