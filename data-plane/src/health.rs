//! Active health probes: one task per distinct backend and probe (routes that
//! share a backend share its probe), `GET path` every interval; a failure (no
//! answer, TLS that does not verify, or 500 and above) takes the backend out
//! of the pools of every route using it, a success brings it back. Each
//! route's transition goes to the control plane. Tasks are reconciled with
//! each new table; they run on their own thread, away from config applies.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use portico_proto::{probe, v1};
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Live;
use crate::outbound::Outbound;
use crate::table::RouteEntry;
use portico_proto::settings::HealthCheck;

/// (backend url, probe, http2): what one probe task checks.
type Key = (String, HealthCheck, bool);
type Members = Arc<Mutex<Vec<Arc<RouteEntry>>>>;

pub async fn run(live: Arc<Live>) {
    let mut tasks: HashMap<Key, (JoinHandle<()>, Members)> = HashMap::new();
    let mut seen_version = None;
    loop {
        let version = live.version.load(Ordering::Acquire);
        if seen_version != Some(version) {
            seen_version = Some(version);
            let table = live.table.load_full();
            let mut wanted: HashMap<Key, Vec<Arc<RouteEntry>>> = HashMap::new();
            for route in table.routes() {
                let key = (
                    route.spec.backend.to_string(),
                    route.policy.probe.clone(),
                    route.policy.http2,
                );
                wanted.entry(key).or_default().push(route.clone());
            }
            tasks.retain(|key, (task, _)| {
                let keep = wanted.contains_key(key);
                if !keep {
                    task.abort();
                }
                keep
            });
            let probes = wanted.len();
            for (key, routes) in wanted {
                match tasks.get(&key) {
                    Some((_, members)) => *members.lock() = routes,
                    None => {
                        let members: Members = Arc::new(Mutex::new(routes));
                        let task = tokio::spawn(probe_loop(
                            key.clone(),
                            members.clone(),
                            live.outbound.clone(),
                        ));
                        tasks.insert(key, (task, members));
                    }
                }
            }
            live.probes.store(probes, Ordering::Release);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probe_loop((_, p, http2): Key, members: Members, outbound: Outbound) {
    loop {
        let Some(first) = members.lock().first().cloned() else {
            return;
        };
        let mode = probe::Mode { http2 };
        let result = probe::check(&first.spec.backend, &p.path, p.timeout, mode).await;
        let healthy = result.healthy();
        let reason = if healthy {
            "probe succeeded".to_string()
        } else {
            result.reason()
        };
        let changes: Vec<v1::HealthChange> = members
            .lock()
            .iter()
            .filter(|route| route.backend.set_healthy(healthy))
            .map(|route| v1::HealthChange {
                route_id: route.spec.route_id.clone(),
                session_id: route.spec.session_id.clone(),
                backend_url: route.spec.backend.to_string(),
                healthy,
                reason: reason.clone(),
            })
            .collect();
        if !changes.is_empty() {
            info!(backend = %first.spec.backend, healthy, %reason, routes = changes.len(), "backend health changed");
            outbound.send(v1::data_plane_message::Msg::Telemetry(v1::Telemetry {
                health: changes,
                ..Default::default()
            }));
        }
        tokio::time::sleep(p.interval).await;
    }
}
