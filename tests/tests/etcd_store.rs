//! The control plane's state in a real etcd (`--store etcd`): what was
//! acknowledged survives a crash, and a second writer on the same prefix
//! is refused rather than forked.

use std::time::Duration;

use portico_e2e::etcd::Etcd;
use portico_e2e::*;

fn etcd_args<'a>(etcd: &'a str, prefix: &'a str) -> [&'a str; 6] {
    [
        "--store",
        "etcd",
        "--etcd-endpoints",
        etcd,
        "--etcd-prefix",
        prefix,
    ]
}

#[test]
fn the_state_lives_in_etcd_and_survives_a_crash() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut cp = ControlPlane::start_with(&etcd_args(&url, "/crash"));
    let dp = DataPlane::start(&cp.grpc_url(), "etcd-dp");
    let backend = FakeBackend::start("etcd-kept");
    let mut s = Session::register(cp.registry, "web", "web-1");
    s.add_route("kept.test", "/", &backend.url());
    s.apply();
    assert_eq!(dp.get("kept.test", "/").status, 200);

    cp.proc.kill();
    cp.start_again();
    let mut c = LineClient::connect(cp.registry);
    assert_eq!(c.send(&format!("RECONNECT|{}", s.id)), "OK");
    let list = json_after(&c.send(&format!("ROUTE_LIST|{}", s.id)), "ROUTE_LIST_OK");
    assert_eq!(list[0]["domains"][0], "kept.test", "{list}");
    assert_eq!(list[0]["status"], "active");
    // Versions and route ids go on from what etcd holds (ids above the
    // block reserved before the crash: none is ever reused).
    let reply = c.send(&format!(
        "ROUTE_ADD|{}|more.test|/|{}|0",
        s.id,
        backend.url()
    ));
    let id: u64 = reply
        .strip_prefix("ROUTE_OK|r")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(id > 1, "{reply}");
    assert_eq!(c.send(&format!("CONFIG_APPLY|{}", s.id)), "OK");
    assert_eq!(dp.get("more.test", "/").status, 200);
    assert_eq!(dp.get("kept.test", "/").status, 200);
    let planes = dataplanes(&cp);
    assert_eq!(planes[0]["acked_version"], 2, "{planes:?}");
}

#[test]
fn a_second_writer_on_the_same_prefix_is_refused_not_forked() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut first = ControlPlane::start_with(&etcd_args(&url, "/shared"));
    let backend = FakeBackend::start("etcd-shared");
    let mut a = Session::register(first.registry, "a", "a-1");
    a.add_route("a.test", "/", &backend.url());
    a.apply();
    // A second control plane on the same prefix reads version 1 and commits 2.
    let second = ControlPlane::start_with(&etcd_args(&url, "/shared"));
    let mut b = Session::register(second.registry, "b", "b-1");
    b.add_route("b.test", "/", &backend.url());
    b.apply();
    // The first one still holds version 1: its next commit is refused, and
    // it stops rather than write over the second one's version.
    a.add_route("a2.test", "/", &backend.url());
    // (It may exit before its ERROR reply is written.)
    a.client
        .send_raw(format!("CONFIG_APPLY|{}\n", a.id).as_bytes());
    let status = first.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(70));
    assert!(first.proc.log_contains("another writer shares its prefix"));
    // The second one's commit stands.
    assert_eq!(b.cmd("PING", ""), "PONG");
    let planes = ctl(&second, &["snapshot", "--json"]);
    let snapshot: serde_json::Value = serde_json::from_str(&planes).unwrap();
    assert_eq!(snapshot["version"], 2, "{snapshot}");
}
