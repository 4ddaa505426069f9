//! The actors' timers on a paused tokio clock: the apply timeout, the
//! session grace, staged-change expiry and drain completion, each checked
//! at the virtual moment before and after it fires, with no real sleeping.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};

use crate::config::committer::Committer;
use crate::config::global::SharedConfig;
use crate::config::history::Commit;
use crate::observe::telemetry::Telemetry;
use crate::planes::plane_commands::PlaneCommands;
use crate::planes::publisher::{
    CurrentSnapshot, ListPlanes, PlaneConnected, PlaneGone, Publish, Publisher,
};
use crate::protocol::parse;
use crate::session::{
    Directory, Exec, Home, HomeClosed, Identity, RouteIds, SessionActor, SessionEnv,
    SessionSettings, Sessions,
};
use crate::store::{Batch, Fatal, Loaded, Store, StoreError};

const APPLY_TIMEOUT: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(60);
const STAGED_TTL: Duration = Duration::from_secs(30 * 60);
const FLEET_GRACE: Duration = Duration::from_secs(10);

/// A store that keeps nothing but counts what it was asked to keep, and
/// fails every write once `broken`.
#[derive(Default)]
struct MemStore {
    commits: Mutex<usize>,
    broken: std::sync::atomic::AtomicBool,
}

impl Store for MemStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        Ok(Loaded::default())
    }

    fn commit(&self, _: &Batch) -> Result<(), StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Write {
                path: "memory".into(),
                reason: "broken for the test".into(),
            });
        }
        *self.commits.lock() += 1;
        Ok(())
    }
}

/// An actix system on a current-thread runtime whose clock only moves when
/// every task waits: timers fire at once, at their exact virtual time.
fn paused() -> actix_rt::SystemRunner {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a paused runtime")
    })
}

fn publisher(store: Arc<dyn Store>) -> Addr<Publisher> {
    publisher_with(store, APPLY_TIMEOUT)
}

fn publisher_with(store: Arc<dyn Store>, apply_timeout: Duration) -> Addr<Publisher> {
    publisher_on(store, apply_timeout, Arc::default())
}

fn publisher_on(
    store: Arc<dyn Store>,
    apply_timeout: Duration,
    config: SharedConfig,
) -> Addr<Publisher> {
    Publisher::new(apply_timeout, FLEET_GRACE, config, Vec::new(), store).start()
}

/// A data plane's stream: connected as `node`, returning its connection id.
async fn connect(
    publisher: &Addr<Publisher>,
    node: &str,
) -> (
    u64,
    mpsc::UnboundedReceiver<Result<portico_proto::v1::ControlPlaneMessage, tonic::Status>>,
) {
    let (tx, mut pushes) = mpsc::unbounded_channel();
    let connected = PlaneConnected {
        node_id: node.into(),
        address: "test".into(),
        applied_version: 0,
        tx,
        features: Vec::new(),
    };
    let conn = publisher.send(connected).await.unwrap();
    // First on every stream: the global defaults (none here).
    let first = pushes.try_recv().expect("the defaults first").unwrap();
    assert!(matches!(
        first.msg,
        Some(portico_proto::v1::control_plane_message::Msg::Defaults(_))
    ));
    (conn, pushes)
}

fn commit(version: u64) -> Commit {
    Commit {
        version,
        base: version - 1,
        ..Default::default()
    }
}

/// Everything a session needs, with no data plane connected.
fn shared() -> (Arc<Sessions>, Addr<Publisher>) {
    let (shared, publisher, _, _) = shared_on(Arc::new(MemStore::default()));
    (shared, publisher)
}

/// `shared` on `store`, with the configuration and what `Fatal` reports.
fn shared_on(
    store: Arc<MemStore>,
) -> (
    Arc<Sessions>,
    Addr<Publisher>,
    SharedConfig,
    mpsc::UnboundedReceiver<StoreError>,
) {
    let store: Arc<dyn Store> = store;
    let (fatal, failures) = Fatal::channel();
    let config = SharedConfig::default();
    let publisher = publisher_on(store.clone(), APPLY_TIMEOUT, config.clone());
    let telemetry = Telemetry::new(config.clone());
    let committer = Committer::new(
        config.clone(),
        publisher.clone(),
        store.clone(),
        fatal.clone(),
        telemetry.clone(),
        Default::default(),
    )
    .start();
    let directory = Arc::new(Directory::new(vec![Arbiter::current()]));
    let leaving = directory.clone();
    let env = Arc::new(SessionEnv {
        committer,
        telemetry,
        planes: PlaneCommands::new(
            publisher.clone(),
            crate::planes::peers::Peers::new(store.clone(), Default::default()),
        ),
        settings: SessionSettings {
            grace: GRACE,
            staged_ttl: STAGED_TTL,
            maintenance_probe_limit: Duration::from_secs(60),
            backend_policy: Default::default(),
            limits: Default::default(),
        },
        auth: None,
        metrics: Default::default(),
        route_ids: std::sync::Arc::new(RouteIds::new(0, store.clone(), fatal)),
        leave: Box::new(move |id, identity| leaving.remove(id, identity)),
    });
    let shared = Arc::new(Sessions::new(env, directory, store));
    (shared, publisher, config, failures)
}

/// A registered session, its home connection and the events sent there.
async fn session(
    shared: &Arc<Sessions>,
) -> (Addr<SessionActor>, Home, mpsc::UnboundedReceiver<String>) {
    let (events, received) = mpsc::unbounded_channel();
    let home = Home { conn_id: 1, events };
    let identity = Identity {
        id: String::new(),
        service: "web".into(),
        instance: "web-1".into(),
        maintenance_port: 0,
        metadata: serde_json::Map::new(),
        peer_ip: None,
        connected_at: SystemTime::now(),
        token: None,
    };
    let id = shared
        .register(identity, home.clone())
        .await
        .expect("registered");
    let key = crate::session::key::session_key(&id);
    let addr = shared.directory.lookup(&key).expect("a live session");
    (addr, home, received)
}

/// Sends one protocol line (its session field is ignored) and returns the reply line.
async fn exec(addr: &Addr<SessionActor>, home: &Home, line: &str) -> String {
    let request = parse(line).expect("a valid line");
    let answer = addr
        .send(Exec {
            name: request.name,
            command: request.command,
            conn: home.clone(),
            presented: String::new(),
        })
        .await
        .expect("the session answers");
    answer.reply.render(None).trim_end().to_string()
}

#[test]
fn an_apply_answers_at_the_apply_timeout_naming_the_silent_data_plane() {
    paused().block_on(async {
        let publisher = publisher(Arc::new(MemStore::default()));
        let _plane = connect(&publisher, "dp-1").await;
        let (done, mut acks) = oneshot::channel();
        let started = Instant::now();
        let commit = commit(1);
        publisher.send(Publish { commit, done }).await.unwrap();
        sleep(APPLY_TIMEOUT - Duration::from_millis(1)).await;
        assert!(acks.try_recv().is_err(), "still waiting for dp-1");
        let report = acks.await.unwrap();
        assert_eq!(report.lagging, ["dp-1"]);
        at_timer_precision(started.elapsed(), APPLY_TIMEOUT);
    });
}

#[test]
fn a_data_plane_away_for_the_fleet_grace_leaves_and_releases_the_apply() {
    paused().block_on(async {
        let publisher = publisher_with(Arc::new(MemStore::default()), Duration::from_secs(60));
        let (conn, _pushes) = connect(&publisher, "dp-1").await;
        let started = Instant::now();
        publisher.send(PlaneGone { conn }).await.unwrap();
        let (done, mut acks) = oneshot::channel();
        let commit = commit(1);
        publisher.send(Publish { commit, done }).await.unwrap();
        sleep(FLEET_GRACE - Duration::from_millis(1)).await;
        assert!(acks.try_recv().is_err(), "waited for within the grace");
        let report = acks.await.unwrap();
        assert_eq!(
            (report.gone, report.lagging),
            (vec!["dp-1".to_string()], vec![])
        );
        at_timer_precision(started.elapsed(), FLEET_GRACE);
        let planes = publisher.send(ListPlanes).await.unwrap().data_planes;
        assert_eq!(planes[0].state, "gone");
    });
}

#[test]
fn a_session_without_its_connection_ends_when_the_grace_passes() {
    paused().block_on(async {
        let (shared, publisher) = shared();
        let (addr, home, _events) = session(&shared).await;
        let added = exec(&addr, &home, "ROUTE_ADD|S|a.test|/|http://127.0.0.1:9|0").await;
        assert_eq!(added, "ROUTE_OK|r1");
        assert_eq!(exec(&addr, &home, "CONFIG_APPLY|S").await, "OK");
        addr.send(HomeClosed { conn_id: 1 }).await.unwrap();
        sleep(GRACE - Duration::from_secs(1)).await;
        assert_eq!(shared.directory.len(), 1, "alive within the grace");
        sleep(Duration::from_secs(2)).await;
        assert!(shared.directory.is_empty(), "ended after the grace");
        let snapshot = publisher.send(CurrentSnapshot).await.unwrap();
        assert_eq!(snapshot.version, 2, "its routes were removed in one commit");
        assert!(snapshot.snapshot.unwrap().routes.is_empty());
    });
}

#[test]
fn staged_changes_expire_after_the_staged_ttl() {
    paused().block_on(async {
        let (shared, _publisher) = shared();
        let (addr, home, _events) = session(&shared).await;
        exec(&addr, &home, "ROUTE_ADD|S|a.test|/|http://127.0.0.1:9|0").await;
        sleep(STAGED_TTL - Duration::from_secs(1)).await;
        let listed = exec(&addr, &home, "ROUTE_LIST|S").await;
        assert!(listed.contains("\"staged\""), "{listed}");
        // The list did not touch the clock; a later edit would have.
        sleep(Duration::from_secs(2)).await;
        assert_eq!(exec(&addr, &home, "ROUTE_LIST|S").await, "ROUTE_LIST_OK|[]");
    });
}

/// `waited` is `want` to the timer's precision: tokio's timers tick in whole
/// milliseconds from an instant that need not sit on a millisecond
/// boundary, so a deadline may round by up to a millisecond (a CI run
/// saw 999 ms for 1 s).
fn at_timer_precision(waited: Duration, want: Duration) {
    assert!(
        waited.abs_diff(want) <= Duration::from_millis(1),
        "waited {waited:?}, want {want:?}"
    );
}

#[test]
fn a_drain_completes_at_its_end_and_tells_subscribers() {
    paused().block_on(async {
        let (shared, _publisher) = shared();
        let (addr, home, mut events) = session(&shared).await;
        exec(&addr, &home, "SUBSCRIBE|S|drain_completed").await;
        exec(&addr, &home, "ROUTE_ADD|S|a.test|/|http://127.0.0.1:9|0").await;
        exec(&addr, &home, "CONFIG_APPLY|S").await;
        let started = exec(&addr, &home, "DRAIN_START|S|10s").await;
        assert!(started.starts_with("DRAIN_OK|"), "{started}");
        sleep(Duration::from_secs(9)).await;
        assert!(events.try_recv().is_err(), "not before the end");
        let before = Instant::now();
        let event = events.recv().await.expect("drain_completed");
        at_timer_precision(before.elapsed(), Duration::from_secs(1));
        assert!(event.starts_with("EVENT|drain_completed|"), "{event}");
    });
}

#[test]
fn a_store_that_cannot_be_written_fails_the_command_and_stops_everything_else() {
    paused().block_on(async {
        let store = Arc::new(MemStore::default());
        let (shared, publisher, config, mut failures) = shared_on(store.clone());
        let (addr, home, _events) = session(&shared).await;
        exec(&addr, &home, "ROUTE_ADD|S|a.test|/|http://127.0.0.1:9|0").await;
        store
            .broken
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(
            exec(&addr, &home, "CONFIG_APPLY|S").await,
            "ERROR|internal error: the state store cannot be written"
        );
        assert!(
            failures.try_recv().is_ok(),
            "main is told, to stop with its exit code"
        );
        assert!(
            config.read().failed(),
            "nothing in memory is pushed any more"
        );
        let (_conn, mut pushes) = connect(&publisher, "dp-late").await;
        assert!(
            pushes.try_recv().is_err(),
            "no catch-up from a failed configuration"
        );
        assert_eq!(
            exec(&addr, &home, "CONFIG_APPLY|S").await,
            "ERROR|internal error: the state store cannot be written",
            "and nothing more is committed"
        );
    });
}
