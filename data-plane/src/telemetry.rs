//! Sends the control plane, once a second, what each route saw since the
//! last report and the state of the circuit breakers. While the control
//! plane is away the counters keep accumulating.

use std::sync::Arc;
use std::time::Duration;

use portico_proto::v1;

use crate::config::Live;
use crate::sync::Outbound;

pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(live: Arc<Live>, outbound: Outbound) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tick.tick().await;
        if !outbound.connected() {
            continue;
        }
        let mut routes = std::mem::take(&mut *live.leftover_stats.lock());
        routes.extend(live.registry.take_stats());
        let breakers = live.registry.breakers();
        if routes.is_empty() && breakers.is_empty() {
            continue;
        }
        outbound.send(v1::data_plane_message::Msg::Telemetry(v1::Telemetry {
            routes,
            breakers,
            health: Vec::new(),
        }));
    }
}
