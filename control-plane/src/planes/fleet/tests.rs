use super::*;
use oneshot::error::TryRecvError;
use tokio::sync::mpsc;

const GRACE: Duration = Duration::from_secs(10);

fn stream() -> (
    PushSender,
    mpsc::UnboundedReceiver<Result<v1::ControlPlaneMessage, tonic::Status>>,
) {
    mpsc::unbounded_channel()
}

fn message() -> v1::ControlPlaneMessage {
    v1::ControlPlaneMessage::default()
}

type Pushes = mpsc::UnboundedReceiver<Result<v1::ControlPlaneMessage, tonic::Status>>;

/// Connects `node` holding `applied` while the fleet is at `version`;
/// the receiver stands for the data plane's end of the stream.
fn join(fleet: &mut Fleet, node: &str, applied: u64, version: u64, now: Instant) -> (u64, Pushes) {
    let (tx, pushes) = stream();
    (
        fleet
            .connect(node, "x".into(), applied, version, tx, now)
            .conn,
        pushes,
    )
}

fn publish(fleet: &mut Fleet, version: u64) -> oneshot::Receiver<AckReport> {
    let (tx, rx) = oneshot::channel();
    fleet.publish(version, &message(), tx);
    rx
}

fn shared_record(node: &str, replica: &str, acked: u64, state: &str) -> MemberRecord {
    MemberRecord {
        node_id: node.into(),
        address: "y".into(),
        acked_version: acked,
        last_seen_unix_ms: 1,
        replica: replica.into(),
        state: state.into(),
        features: Vec::new(),
    }
}

#[test]
fn a_plane_on_another_replica_holds_the_apply_until_its_ack_is_shared() {
    let t0 = Instant::now();
    let mut fleet = Fleet::shared(GRACE, "r1");
    let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
    // Its own record coming back is not a remote member.
    assert_eq!(
        fleet.remote_update(shared_record("a", "r1", 0, "connected"), t0),
        None
    );
    assert_eq!(
        fleet.remote_update(shared_record("b", "r2", 0, "connected"), t0),
        Some(MemberState::Connected)
    );
    let mut done = publish(&mut fleet, 1);
    fleet.ack(ca, 1);
    assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "b has not acked");
    fleet.remote_update(shared_record("b", "r2", 1, "connected"), t0);
    assert_eq!(done.try_recv().unwrap().acked, ["a", "b"]);
    let listed = fleet.list(1);
    assert_eq!(
        (listed[0].replica.as_str(), listed[1].replica.as_str()),
        ("r1", "r2")
    );

    // Stopping on its replica: not waited for. Gone: it leaves here too,
    // and the grace here never removes it.
    fleet.remote_update(shared_record("b", "r2", 1, "stopping"), t0);
    let mut done = publish(&mut fleet, 2);
    fleet.ack(ca, 2);
    assert_eq!(done.try_recv().unwrap().acked, ["a"]);
    fleet.remote_update(shared_record("b", "r2", 2, "disconnected"), t0);
    assert!(fleet.expire(t0 + GRACE * 10).is_empty());
    let mut done = publish(&mut fleet, 3);
    assert!(fleet.remote_gone("b"));
    fleet.ack(ca, 3);
    assert_eq!(done.try_recv().unwrap().gone, ["b"]);
    assert!(
        !fleet.remote_gone("a"),
        "a local member is this replica's to drop"
    );
}

#[test]
fn a_plane_that_moves_here_is_local_again() {
    let t0 = Instant::now();
    let mut fleet = Fleet::shared(GRACE, "r1");
    fleet.restore(vec![shared_record("b", "r2", 4, "connected")], t0);
    assert_eq!(fleet.list(4)[0].state, "connected");
    let (cb, _rb) = join(&mut fleet, "b", 4, 4, t0);
    // Its old replica's records no longer count while its stream is here.
    assert_eq!(
        fleet.remote_update(shared_record("b", "r2", 4, "disconnected"), t0),
        None
    );
    assert_eq!(fleet.list(4)[0].replica, "r1");
    fleet.disconnect(cb, t0);
    assert_eq!(fleet.expire(t0 + GRACE).len(), 1);
}

#[test]
fn a_member_that_blipped_is_waited_for_and_released_by_its_catch_up_ack() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
    let (cb, _rb) = join(&mut fleet, "b", 0, 0, t0);
    assert!(matches!(
        fleet.disconnect(cb, t0),
        StreamEnd::Disconnected(_)
    ));
    let mut done = publish(&mut fleet, 1);
    fleet.ack(ca, 1);
    assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "b is waited for");
    let (cb2, _rb2) = join(&mut fleet, "b", 0, 1, t0);
    fleet.ack(cb2, 1);
    let report = done.try_recv().unwrap();
    assert_eq!(report.acked, ["a", "b"]);
    assert!(report.lagging.is_empty() && report.gone.is_empty());
}

#[test]
fn a_member_back_with_the_version_is_released_by_its_hello() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
    let mut done = publish(&mut fleet, 1);
    fleet.disconnect(ca, t0);
    let _a2 = join(&mut fleet, "a", 1, 1, t0);
    assert_eq!(done.try_recv().unwrap().acked, ["a"]);
}

#[test]
fn restored_members_hold_the_first_apply_until_they_are_back() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let record = MemberRecord {
        node_id: "a".into(),
        address: "x".into(),
        acked_version: 4,
        last_seen_unix_ms: 1,
        replica: String::new(),
        state: String::new(),
        features: Vec::new(),
    };
    fleet.restore(vec![record], t0);
    assert_eq!(fleet.list(4)[0].state, "disconnected");
    let mut done = publish(&mut fleet, 5);
    assert_eq!(done.try_recv(), Err(TryRecvError::Empty));
    let (a, _ra) = stream();
    let joined = fleet.connect("a", "x".into(), 4, 5, a, t0);
    assert!(!joined.new_member);
    assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "4 is not 5");
    fleet.ack(joined.conn, 5);
    assert_eq!(done.try_recv().unwrap().acked, ["a"]);
}

#[test]
fn a_member_gone_past_the_grace_leaves_and_is_no_longer_waited_for() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
    let (cb, _rb) = join(&mut fleet, "b", 0, 0, t0);
    fleet.disconnect(cb, t0);
    let mut done = publish(&mut fleet, 1);
    fleet.ack(ca, 1);
    assert_eq!(fleet.next_expiry(t0), Some(GRACE));
    assert!(fleet.expire(t0 + GRACE / 2).is_empty());
    let left = fleet.expire(t0 + GRACE);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].node_id, "b");
    let report = done.try_recv().unwrap();
    assert_eq!(
        (report.acked, report.gone),
        (vec!["a".into()], vec!["b".into()])
    );
    let states: Vec<(String, String)> = fleet
        .list(1)
        .into_iter()
        .map(|p| (p.node_id, p.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".into(), "connected".into()),
            ("b".into(), "gone".into())
        ]
    );
    let mut next = publish(&mut fleet, 2);
    fleet.ack(ca, 2);
    assert_eq!(next.try_recv().unwrap().acked, ["a"]);
    let (b2, _rb2) = stream();
    assert!(fleet.connect("b", "y".into(), 2, 2, b2, t0).new_member);
    assert_eq!(
        fleet.list(2).len(),
        2,
        "a returning member is no longer shown gone"
    );
}

#[test]
fn the_timeout_names_the_silent_members() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let _a = join(&mut fleet, "a", 0, 0, t0);
    let (cb, _rb) = join(&mut fleet, "b", 0, 0, t0);
    let mut done = publish(&mut fleet, 1);
    fleet.nack(cb, 1, "too big".into());
    let report = fleet.timeout(1).unwrap();
    assert_eq!(
        (report.nacked, report.lagging),
        (vec!["b".into()], vec!["a".into()])
    );
    assert_eq!(done.try_recv().unwrap().lagging, ["a"]);
    assert!(fleet.timeout(1).is_none(), "answered once");
}

#[test]
fn an_overlapping_reconnect_keeps_the_member_connected() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let (old, _ra) = join(&mut fleet, "a", 0, 0, t0);
    let (_, mut ra2) = join(&mut fleet, "a", 0, 0, t0);
    assert_eq!(
        fleet.disconnect(old, t0),
        StreamEnd::Open,
        "the new stream is open"
    );
    assert_eq!(fleet.disconnect(old, t0), StreamEnd::Open, "told once");
    let _done = publish(&mut fleet, 1);
    assert!(ra2.try_recv().is_ok(), "pushed on the new stream");
    assert_eq!(fleet.list(1)[0].state, "connected");
}

#[test]
fn a_member_whose_catch_up_carried_the_version_is_not_pushed_it_again() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    // Connected while version 2 was committed but not yet published.
    let (ca, mut ra) = join(&mut fleet, "a", 1, 2, t0);
    fleet.ack(ca, 2);
    let mut done = publish(&mut fleet, 2);
    assert_eq!(done.try_recv().unwrap().acked, ["a"]);
    assert!(ra.try_recv().is_err(), "nothing sent");
}

#[test]
fn a_member_ahead_is_neither_pushed_nor_waited_for() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let (_, mut ra) = join(&mut fleet, "a", 9, 3, t0);
    let mut done = publish(&mut fleet, 4);
    assert!(done.try_recv().is_ok());
    assert!(ra.try_recv().is_err());
}

#[test]
fn a_stopping_member_is_released_from_waits_and_leaves_when_its_stream_ends() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let (ca, _ra) = join(&mut fleet, "a", 0, 0, t0);
    let (cb, mut rb) = join(&mut fleet, "b", 0, 0, t0);
    let mut done = publish(&mut fleet, 1);
    fleet.ack(ca, 1);
    assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "b is waited for");
    assert_eq!(fleet.stopping(cb).as_deref(), Some("b"));
    let report = done.try_recv().unwrap();
    assert_eq!(
        (report.acked, report.stopping),
        (vec!["a".into()], vec!["b".into()])
    );
    assert_eq!(fleet.list(1)[1].state, "stopping");

    // Still sent what follows while it drains, but not waited for.
    let mut done = publish(&mut fleet, 2);
    assert!(rb.try_recv().is_ok(), "b still gets pushes");
    fleet.ack(ca, 2);
    assert_eq!(done.try_recv().unwrap().acked, ["a"]);

    let StreamEnd::Stopped(record) = fleet.disconnect(cb, t0) else {
        panic!("a stopping plane's end is a stop");
    };
    assert_eq!(record.node_id, "b");
    assert_eq!(fleet.next_expiry(t0), None, "no grace to wait out");
    let states: Vec<String> = fleet.list(2).into_iter().map(|m| m.state).collect();
    assert_eq!(states, ["connected", "stopped"]);
}

#[test]
fn an_old_process_stopping_beside_a_new_one_with_the_same_node_id_keeps_it_waited_for() {
    let t0 = Instant::now();
    let mut fleet = Fleet::new(GRACE);
    let (old, _ro) = join(&mut fleet, "a", 0, 0, t0);
    let (new, _rn) = join(&mut fleet, "a", 0, 0, t0);
    assert_eq!(fleet.stopping(old), None, "the new process still serves");
    assert_eq!(fleet.list(0)[0].state, "connected");
    let mut done = publish(&mut fleet, 1);
    assert_eq!(fleet.disconnect(old, t0), StreamEnd::Open);
    assert_eq!(done.try_recv(), Err(TryRecvError::Empty), "a is waited for");
    fleet.ack(new, 1);
    assert_eq!(done.try_recv().unwrap().acked, ["a"]);
}
