//! Sends the control plane, once a second, what each route saw since the
//! last report and the state of the circuit breakers (their transitions go
//! out at once, from the proxy). While the control plane is away the
//! counters keep accumulating.

use std::sync::Arc;
use std::time::Duration;

use portico_proto::v1;

use crate::config::live::Live;

pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(live: Arc<Live>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tick.tick().await;
        // Built while holding the stream, so it cannot overtake a breaker
        // transition sent after these states were read.
        live.registry.outbound.send_with(|| {
            let mut routes = std::mem::take(&mut *live.leftover_stats.lock());
            routes.extend(live.registry.take_stats());
            let breakers = live.registry.breakers();
            if routes.is_empty() && breakers.is_empty() {
                return None;
            }
            Some(v1::data_plane_message::Msg::Telemetry(v1::Telemetry {
                routes,
                breakers,
                health: Vec::new(),
            }))
        });
    }
}
