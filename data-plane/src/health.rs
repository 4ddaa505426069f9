//! Active health probes: one task per route backend, `GET path` every
//! interval; a failure (no answer, or 500 and above) takes the backend out of
//! its pool at once, a success brings it back. Transitions go to the control
//! plane. Probe tasks are reconciled with each new table.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use portico_proto::{probe, v1};
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Live;
use crate::policy::Probe;
use crate::sync::Outbound;
use crate::table::RouteEntry;

type Key = (String, String, Probe);

pub async fn run(live: Arc<Live>, outbound: Outbound) {
    let mut tasks: HashMap<Key, JoinHandle<()>> = HashMap::new();
    let mut seen_version = None;
    loop {
        let version = live.version.load(Ordering::Acquire);
        if live.ready.load(Ordering::Acquire) && seen_version != Some(version) {
            seen_version = Some(version);
            let table = live.table.load_full();
            let mut wanted: HashMap<Key, Arc<RouteEntry>> = HashMap::new();
            for route in &table.routes {
                let key = (
                    route.spec.route_id.clone(),
                    route.spec.backend.to_string(),
                    route.policy.probe.clone(),
                );
                wanted.insert(key, route.clone());
            }
            tasks.retain(|key, task| {
                let keep = wanted.contains_key(key);
                if !keep {
                    task.abort();
                }
                keep
            });
            for (key, route) in wanted {
                tasks
                    .entry(key)
                    .or_insert_with(|| tokio::spawn(probe_loop(route, outbound.clone())));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probe_loop(route: Arc<RouteEntry>, outbound: Outbound) {
    let p = route.policy.probe.clone();
    loop {
        let mode = probe::Mode {
            http2: route.policy.http2,
        };
        let result = probe::check(&route.spec.backend, &p.path, p.timeout, mode).await;
        let healthy = result.healthy();
        if route.backend.set_healthy(healthy) {
            let reason = if healthy {
                "probe succeeded".to_string()
            } else {
                result.reason()
            };
            info!(route_id = %route.spec.route_id, backend = %route.spec.backend, healthy, %reason, "backend health changed");
            outbound.send(v1::data_plane_message::Msg::Telemetry(v1::Telemetry {
                health: vec![v1::HealthChange {
                    route_id: route.spec.route_id.clone(),
                    session_id: route.spec.session_id.clone(),
                    backend_url: route.spec.backend.to_string(),
                    healthy,
                    reason,
                }],
                ..Default::default()
            }));
        }
        tokio::time::sleep(p.interval).await;
    }
}
