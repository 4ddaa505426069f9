//! The read-only JSON API and the dashboard page on the admin listener:
//! sessions, routes with their live figures, data planes, and the last
//! pushes and acknowledgements (kept by watching the publisher).

use std::collections::VecDeque;
use std::sync::Arc;

use actix::Addr;
use parking_lot::Mutex;
use portico_proto::time::{from_unix_ms, rfc3339};
use portico_proto::{v1, RouteSpec};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::global::SharedConfig;
use crate::observe::telemetry::Telemetry;
use crate::planes::publisher::{ListPlanes, Publisher, Watch};
use crate::protocol::RouteId;
use crate::session::{Describe, Directory};

/// The page, with its script and style inline; it loads only uPlot, served
/// from the binary too: nothing is fetched from elsewhere.
pub const PAGE: &str = include_str!("dashboard.html");

/// uPlot 1.6.32 (MIT, npm `uplot`, `dist/` as published; see
/// `assets/README.md`): the charts.
pub const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
pub const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");

/// How many pushes, answers and member changes `/api/v1/events` keeps.
const EVENTS_KEPT: usize = 200;

/// The last events, newest last.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<VecDeque<Value>>>);

impl Events {
    /// Watches the publisher for as long as the control plane runs.
    pub fn watch(publisher: &Addr<Publisher>) -> Events {
        let events = Events::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        publisher.do_send(Watch(tx));
        let kept = events.clone();
        actix_rt::spawn(async move {
            while let Some(Ok(event)) = rx.recv().await {
                if let Some(view) = event_json(event) {
                    let mut list = kept.0.lock();
                    if list.len() == EVENTS_KEPT {
                        list.pop_front();
                    }
                    list.push_back(view);
                }
            }
        });
        events
    }

    fn list(&self) -> Vec<Value> {
        self.0.lock().iter().cloned().collect()
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

fn time_of(ms: i64) -> Option<String> {
    (ms > 0).then(|| rfc3339(from_unix_ms(ms)))
}

/// The kinds of [`event_json`]'s views and when each comes.
pub const OPERATOR_EVENTS: [(&str, &str); 4] = [
    ("push", "a version was committed and sent to the fleet"),
    ("ack", "a data plane serves a version"),
    (
        "nack",
        "a data plane refused a version and keeps its last good one",
    ),
    (
        "member",
        "a data plane joined, lost its stream, came back, began stopping or left the fleet",
    ),
];

/// A replica as operators see it (`/api/v1/replicas`, `porticoctl replicas --json`).
pub fn replica_json(r: &v1::ReplicaInfo) -> Value {
    json!({
        "id": r.id,
        "registry": r.registry,
        "grpc": r.grpc,
        "admin": r.admin,
        "started": time_of(r.started_unix_ms),
        "self": r.is_self,
    })
}

/// An operator event as `/api/v1/events` shows it.
pub fn event_json(event: v1::WatchEvent) -> Option<Value> {
    use v1::watch_event::Event;
    Some(match event.event? {
        Event::Push(p) => json!({
            "type": "push",
            "version": p.version,
            "committed_at": time_of(p.committed_at_unix_ms),
            "added": p.added,
            "changed": p.changed,
            "removed": p.removed,
            "sent_to": p.sent_to,
            "bytes": p.bytes,
        }),
        Event::Answer(a) => json!({
            "type": if a.ok { "ack" } else { "nack" },
            "version": a.version,
            "node_id": a.node_id,
            "reason": (!a.ok).then_some(a.reason),
            "at": rfc3339(std::time::SystemTime::now()),
        }),
        Event::Member(m) => json!({
            "type": "member",
            "node_id": m.node_id,
            "state": m.state,
            "at": rfc3339(std::time::SystemTime::now()),
        }),
    })
}

/// What the API reads.
#[derive(Clone)]
pub struct Api {
    pub directory: Arc<Directory>,
    /// This replica's id (empty with a store of one's own).
    pub replica: String,
    pub telemetry: Telemetry,
    pub config: SharedConfig,
    pub publisher: Addr<Publisher>,
    pub events: Events,
    /// ACME domains still waiting, for the certificates view.
    pub acme: crate::certs::AcmeStatus,
    /// The replicas are read from the store; this one is among them.
    pub store: Arc<dyn crate::store::Store>,
    pub me: crate::store::ReplicaRecord,
    /// The site files and how they stand.
    pub sites: crate::sites::status::SitesBoard,
}

impl Api {
    /// The answer to `GET path`, if the path is the API's.
    pub async fn get(&self, path: &str) -> Option<Value> {
        Some(match path {
            "/api/v1/sessions" => self.sessions().await,
            "/api/v1/routes" => self.routes(),
            "/api/v1/dataplanes" => self.dataplanes().await,
            "/api/v1/events" => json!({ "events": self.events.list() }),
            "/api/v1/certs" => self.certs().await,
            "/api/v1/sites" => crate::sites::status::list_json(&self.sites.lock().to_wire()),
            "/api/v1/replicas" => self.replicas().await,
            "/api/v1/series" => self.telemetry.fleet_series(),
            _ => {
                let id = path.strip_prefix("/api/v1/series/")?;
                self.config.read().has_route(id).then_some(())?;
                self.telemetry.route_series(id)
            }
        })
    }

    /// What the live stream sends every tick: the version, requests/s over
    /// the fleet and per busy route, and the data planes by state.
    pub async fn tick(&self) -> Value {
        let (rps, busy) = self.telemetry.live_rates();
        let listed = self.publisher.send(ListPlanes).await.unwrap_or_default();
        let mut states = serde_json::Map::new();
        for p in &listed.data_planes {
            let n = states.entry(p.state.clone()).or_insert(json!(0));
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
        let max_lag = listed.data_planes.iter().map(|p| p.lag).max().unwrap_or(0);
        json!({
            "version": listed.version,
            "at": rfc3339(std::time::SystemTime::now()),
            "rps": (rps * 10.0).round() / 10.0,
            "routes": busy,
            "dataplanes": states,
            "max_lag": max_lag,
            "events": self.events.len(),
        })
    }

    async fn certs(&self) -> Value {
        let Ok(list) = crate::certs::list(&self.config, &self.acme, &self.publisher).await else {
            return json!({ "certificates": [], "pending": [] });
        };
        let now = portico_proto::time::unix_ms(std::time::SystemTime::now());
        crate::certs::list_json(&list, now)
    }

    async fn replicas(&self) -> Value {
        let replicas = crate::store::live_replicas(self.store.clone(), &self.me)
            .await
            .unwrap_or_default();
        let views: Vec<Value> = replicas.iter().map(replica_json).collect();
        json!({ "replicas": views })
    }

    async fn sessions(&self) -> Value {
        let asked = self.directory.all().into_iter().map(|s| s.send(Describe));
        let mut sessions: Vec<Value> = futures::future::join_all(asked)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .map(|mut session| {
                session["replica"] = json!(self.replica);
                session
            })
            .collect();
        // With replicas, those the others run too, as stored.
        sessions.extend(self.directory.stored_elsewhere().into_iter().map(|s| {
            json!({
                "session": crate::session::key::handle(&s.instance, &s.id),
                "service": s.service,
                "instance": s.instance,
                "state": "on another replica",
                "replica": s.replica,
            })
        }));
        sessions.sort_by(|a, b| a["session"].as_str().cmp(&b["session"].as_str()));
        json!({ "sessions": sessions })
    }

    fn routes(&self) -> Value {
        let (version, routes): (u64, Vec<Arc<RouteSpec>>) = {
            let config = self.config.read();
            (config.version(), config.all_routes().cloned().collect())
        };
        let telemetry = &self.telemetry;
        let mut views: Vec<Value> = routes
            .iter()
            .map(|spec| {
                let mut view = portico_proto::json::route_json(spec);
                let id = spec
                    .route_id
                    .strip_prefix('r')
                    .and_then(|n| n.parse().ok())
                    .map(RouteId);
                if let Some(id) = id {
                    view["live"] = telemetry.route_view(id);
                }
                view
            })
            .collect();
        views.sort_by_key(|v| {
            v["route_id"]
                .as_str()
                .and_then(|s| s.strip_prefix('r'))
                .and_then(|n| n.parse::<u64>().ok())
        });
        json!({ "version": version, "routes": views })
    }

    async fn dataplanes(&self) -> Value {
        let listed = self.publisher.send(ListPlanes).await.unwrap_or_default();
        let planes: Vec<Value> = listed
            .data_planes
            .iter()
            .map(|p| {
                json!({
                    "node_id": p.node_id,
                    "state": p.state,
                    "address": p.address,
                    "acked_version": p.acked_version,
                    "lag": p.lag,
                    "connected_since": time_of(p.connected_since_unix_ms),
                    "last_seen": time_of(p.last_seen_unix_ms),
                    "last_nack_version": (p.last_nack_version > 0).then_some(p.last_nack_version),
                    "last_nack_reason": (!p.last_nack_reason.is_empty()).then_some(&p.last_nack_reason),
                })
            })
            .collect();
        json!({ "version": listed.version, "dataplanes": planes })
    }
}
