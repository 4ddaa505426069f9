use super::*;

fn route(id: &str, host: &str, path: &str) -> RouteSpec {
    RouteSpec::for_test(id, "x", &[host], path, "http://127.0.0.1:1")
}

#[test]
fn another_service_cannot_take_a_host_and_path() {
    let mut g = GlobalConfig::new(0);
    g.commit("s1", "billing", vec![route("r1", "api.example.com", "/v1")])
        .unwrap();
    let err = g
        .commit("s2", "shop", vec![route("r7", "api.example.com", "/v1/")])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route r7: api.example.com/v1/ is owned by service billing"
    );
    // Same service from another instance joins the pool.
    assert!(g
        .commit("s3", "billing", vec![route("r8", "api.example.com", "/v1")])
        .is_ok());
    // Once every billing route is gone, the host and path are free.
    g.remove_session("s1");
    g.remove_session("s3");
    assert!(g
        .commit("s2", "shop", vec![route("r7", "api.example.com", "/v1")])
        .is_ok());
}

#[test]
fn transfer_keeps_route_ids_and_removes_nothing() {
    let mut g = GlobalConfig::new(0);
    g.commit("old", "web", vec![route("r1", "a.com", "/")])
        .unwrap();
    let mut moved = route("r1", "a.com", "/");
    moved.session = "new".into();
    let c = g
        .transfer("old", "new", "web", vec![moved])
        .unwrap()
        .unwrap();
    assert_eq!(c.upserted[0].session, "new");
    assert!(c.removed.is_empty());
    assert_eq!(g.remove_session("old"), None);
    assert_eq!(
        g.remove_session("new").unwrap().removed,
        vec!["r1".to_string()]
    );
}

#[test]
fn versions_count_real_changes_and_deltas_name_them() {
    let mut g = GlobalConfig::new(10);
    let c = g
        .commit(
            "s1",
            "a",
            vec![route("r1", "a.com", "/"), route("r2", "b.com", "/")],
        )
        .unwrap()
        .unwrap();
    assert_eq!((c.version, c.upserted.len(), c.removed.len()), (11, 2, 0));
    assert_eq!(
        g.commit(
            "s1",
            "a",
            vec![route("r1", "a.com", "/"), route("r2", "b.com", "/")]
        )
        .unwrap(),
        None
    );
    let c = g
        .commit("s1", "a", vec![route("r1", "a.com", "/x")])
        .unwrap()
        .unwrap();
    assert_eq!(c.version, 12);
    assert_eq!(c.upserted[0].route_id, "r1");
    assert_eq!(c.removed, vec!["r2".to_string()]);
    let c = g.remove_session("s1").unwrap();
    assert_eq!((c.version, c.removed.clone()), (13, vec!["r1".to_string()]));
    assert!(g.sessions.is_empty() && g.owners.is_empty());
    assert_eq!(g.remove_session("s1"), None);
}

#[test]
fn changes_tells_whether_a_replacement_would_bump_the_version() {
    let mut g = GlobalConfig::new(0);
    assert!(!g.changes("s1", &[]));
    assert!(g.changes("s1", &[route("r1", "a.com", "/")]));
    g.commit("s1", "a", vec![route("r1", "a.com", "/")])
        .unwrap();
    assert!(!g.changes("s1", &[route("r1", "a.com", "/")]));
    assert!(g.changes("s1", &[route("r1", "a.com", "/x")]));
    assert!(g.changes("s1", &[]));
    assert!(g.changes(
        "s1",
        &[route("r1", "a.com", "/"), route("r2", "b.com", "/")]
    ));
}

#[test]
fn another_replicas_version_is_taken_in_as_one_commit() {
    // Replica A commits; B, at the same version, follows what A stored.
    let mut a = GlobalConfig::new(0);
    let mut b = GlobalConfig::new(0);
    a.commit("s1", "web", vec![route("r1", "a.com", "/")])
        .unwrap();
    b.commit("s2", "api", vec![route("r2", "b.com", "/")])
        .unwrap();
    // B's version 1 lost the race: B takes in A's whole state at 1.
    // (Its own uncommitted change is not there, as on a refused commit.)
    let mut b = GlobalConfig::new(0);
    let c = b
        .follow(
            1,
            vec![("s1".into(), "web".into(), vec![route("r1", "a.com", "/")])],
            vec![],
            TlsChange::default(),
        )
        .unwrap();
    assert_eq!(
        (c.base, c.version, c.added.clone()),
        (0, 1, vec!["r1".to_string()])
    );
    // Ownership now holds across both: api cannot take a.com/.
    assert!(b
        .check("api", &[route("r9", "a.com", "/")])
        .is_err_and(|e| e.to_string().contains("owned by service web")));
    // Seen again (its own write coming back) it changes nothing.
    assert_eq!(
        b.follow(1, vec![], vec!["s1".into()], TlsChange::default()),
        None
    );
    // A gone session and a new one, in one version.
    let c = b
        .follow(
            2,
            vec![("s2".into(), "api".into(), vec![route("r2", "b.com", "/")])],
            vec!["s1".into()],
            TlsChange::default(),
        )
        .unwrap();
    assert_eq!(
        (c.removed.clone(), c.added.clone()),
        (vec!["r1".to_string()], vec!["r2".to_string()])
    );
    assert!(!b.has_route("r1") && b.has_route("r2"));
}

#[test]
fn a_resync_converges_on_the_stored_state_and_chains_the_history() {
    let mut g = GlobalConfig::new(0);
    g.commit("s1", "web", vec![route("r1", "a.com", "/")])
        .unwrap();
    g.change_tls(TlsChange {
        certificates: vec![cert("file:a", "01")],
        ..Default::default()
    })
    .unwrap();
    // Versions 3 to 5 happened elsewhere: s1 is gone, s2 came, the
    // certificate was replaced and a challenge added.
    let c = g
        .resync(
            5,
            vec![("s2".into(), "api".into(), vec![route("r2", "b.com", "/")])],
            vec![cert("file:a", "02").as_ref().clone()],
            vec![("t".into(), "t.k".into())],
        )
        .unwrap();
    assert_eq!((c.base, c.version), (2, 5));
    assert_eq!(c.removed, ["r1"]);
    assert_eq!(c.tls.certificates[0].serial, "02");
    assert_eq!(g.tls().challenges["t"], "t.k");
    // A data plane at 2 gets one delta; so does one at 4 (served by
    // another replica): what changed from 2 to 5 holds what it missed.
    for at in [2, 4] {
        let push = g.catch_up(at);
        let (base, delta) = delta_of(&push);
        assert_eq!(base, at);
        assert_eq!(delta.removed, ["r1"]);
        assert_eq!(delta.upserted[0].route_id, "r2");
    }
    // Nothing differs at the same version: no commit.
    assert_eq!(
        g.resync(
            5,
            vec![("s2".into(), "api".into(), vec![route("r2", "b.com", "/")])],
            vec![cert("file:a", "02").as_ref().clone()],
            vec![("t".into(), "t.k".into())],
        ),
        None
    );
}

fn cert(name: &str, serial: &str) -> Arc<v1::Certificate> {
    Arc::new(v1::Certificate {
        name: name.into(),
        domains: vec!["a.test".into()],
        serial: serial.into(),
        source: "file".into(),
        ..Default::default()
    })
}

fn delta_of(message: &v1::ControlPlaneMessage) -> (u64, &v1::Delta) {
    match &message.msg {
        Some(v1::control_plane_message::Msg::Push(v1::ConfigPush {
            base_version,
            body: Some(v1::config_push::Body::Delta(d)),
            ..
        })) => (*base_version, d),
        other => panic!("not a delta: {other:?}"),
    }
}

#[test]
fn certificates_are_versioned_and_caught_up_like_routes() {
    let mut g = GlobalConfig::new(0);
    g.commit("s1", "web", vec![route("r1", "a.test", "/")])
        .unwrap();
    let c = g
        .change_tls(TlsChange {
            certificates: vec![cert("file:a", "01")],
            challenges: vec![v1::AcmeChallenge {
                token: "t".into(),
                key_authorization: "t.k".into(),
            }],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(c.version, 2);
    assert_eq!(g.tls().since["file:a"], 2);
    // The same certificate again changes nothing.
    assert_eq!(
        g.change_tls(TlsChange {
            certificates: vec![cert("file:a", "01")],
            ..Default::default()
        }),
        None
    );
    assert_eq!(g.sessions_on(|h| h == "a.test"), vec!["s1".to_string()]);

    // A data plane at version 1 gets the certificate and the answer.
    let push = g.catch_up(1);
    let (base, delta) = delta_of(&push);
    assert_eq!(base, 1);
    assert_eq!(delta.certificates_upserted[0].serial, "01");
    assert_eq!(delta.challenges_upserted[0].key_authorization, "t.k");

    g.change_tls(TlsChange {
        certificates_removed: vec!["file:a".into()],
        challenges_removed: vec!["t".into()],
        ..Default::default()
    })
    .unwrap();
    let push = g.catch_up(2);
    let (_, delta) = delta_of(&push);
    assert_eq!(delta.certificates_removed, ["file:a"]);
    assert_eq!(delta.challenges_removed, ["t"]);
    assert!(delta.upserted.is_empty() && delta.removed.is_empty());
    // A fresh data plane's snapshot holds what is there now.
    g.change_tls(TlsChange {
        certificates: vec![cert("file:b", "02")],
        ..Default::default()
    })
    .unwrap();
    match g.catch_up(0).msg {
        Some(v1::control_plane_message::Msg::Push(p)) => match p.body {
            Some(v1::config_push::Body::Snapshot(s)) => {
                assert_eq!(s.routes.len(), 1);
                assert_eq!(s.certificates.len(), 1);
                assert!(s.challenges.is_empty());
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}
