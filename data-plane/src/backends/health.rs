//! Active health probes, on their own thread: one task per backend and probe,
//! `GET path` on each of the backend's addresses every interval. A failure
//! takes the address out; a backend is up while any address is up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use portico_proto::probe::{self, ProbeResult};
use portico_proto::v1;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::live::Live;
use crate::config::outbound::Outbound;
use crate::config::table::RouteEntry;
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
                            live.registry.outbound.clone(),
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
    let mode = probe::Mode { http2 };
    loop {
        let Some(first) = members.lock().first().cloned() else {
            return;
        };
        let url = &first.spec.backend;
        let name = first.backend.name.current();
        let results = futures::future::join_all(
            name.addrs
                .iter()
                .map(|addr| probe::check_at(url, Some(*addr), &p.path, p.timeout, mode)),
        )
        .await;
        let results: Vec<(SocketAddr, ProbeResult)> =
            name.addrs.iter().copied().zip(results).collect();
        let (healthy, reason) = verdict(&results, name.error.as_deref());
        let mut changes = Vec::new();
        for route in members.lock().iter() {
            for endpoint in route.backend.endpoints().list.iter() {
                let Some((_, r)) = results.iter().find(|(a, _)| *a == endpoint.addr) else {
                    continue;
                };
                if endpoint.set_healthy(r.healthy()) && results.len() > 1 {
                    info!(route_id = %route.spec.route_id, backend = %url, addr = %endpoint.addr, healthy = r.healthy(), reason = %r.reason(), "backend address health changed");
                }
            }
            if route.backend.report_healthy(healthy) {
                changes.push(v1::HealthChange {
                    route_id: route.spec.route_id.clone(),
                    backend_url: url.to_string(),
                    healthy,
                    reason: reason.clone(),
                });
            }
        }
        if !changes.is_empty() {
            info!(backend = %url, healthy, %reason, routes = changes.len(), "backend health changed");
            outbound.send(v1::data_plane_message::Msg::Telemetry(v1::Telemetry {
                health: changes,
                ..Default::default()
            }));
        }
        tokio::time::sleep(p.interval).await;
    }
}

/// A backend is healthy while any of its addresses is; without addresses
/// it is down for the name's reason.
fn verdict(results: &[(SocketAddr, ProbeResult)], dns_error: Option<&str>) -> (bool, String) {
    if results.iter().any(|(_, r)| r.healthy()) {
        return (true, "probe succeeded".to_string());
    }
    match results {
        [] => (
            false,
            match dns_error {
                Some(e) => format!("name does not resolve: {e}"),
                None => "name not resolved yet".to_string(),
            },
        ),
        [(_, r)] => (false, r.reason()),
        [(addr, r), ..] => (
            false,
            format!("every address down ({addr}: {})", r.reason()),
        ),
    }
}
