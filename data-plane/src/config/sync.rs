//! The data plane's link to the control plane: dial, say hello with the
//! applied version, apply each push and answer ACK or NACK; on any failure
//! keep serving and redial with backoff.

use std::time::Duration;

use portico_proto::v1::{
    self, control_plane_message::Msg, data_plane_message,
    data_plane_service_client::DataPlaneServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{info, info_span, warn, Instrument};

use std::sync::Arc;

use portico_proto::backend_policy::BackendPolicy;
use portico_proto::probe::{self, ProbeResult};
use portico_proto::settings::FEATURE_GEOIP as GEOIP;
use portico_proto::BackendUrl;

use crate::config::install::ConfigState;
use crate::config::live::Live;

/// Waits between failed dials: the first redial after a lost stream goes
/// out at once, and so does each dial of another replica; once every
/// replica failed in a row, the wait goes from `FIRST_BACKOFF` doubling to
/// `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("invalid control plane url: {0}")]
    Url(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("control plane closed the stream")]
    Closed,
}

/// Follows the control plane at `control_planes` (replicas of one: any of
/// them serves the same configuration). A replica that goes away, or cannot
/// be dialled, is followed by the next at once; only once every replica
/// failed in a row does the wait grow.
pub async fn run(
    control_planes: Vec<String>,
    node_id: String,
    mut state: ConfigState,
    cache: Option<std::path::PathBuf>,
    tls: Option<tonic::transport::ClientTlsConfig>,
) {
    let mut backoff: Option<Duration> = None;
    let mut failed_in_a_row = 0;
    for url in control_planes.iter().cycle() {
        let span = info_span!("sync", node_id = %node_id, control_plane = %url);
        let mut streamed = false;
        let result = stream_once(
            url,
            &node_id,
            &mut state,
            &mut streamed,
            cache.as_deref(),
            tls.as_ref(),
        )
        .instrument(span)
        .await;
        state.live.registry.outbound.set(None);
        // A stream that was up and broke is redialled at once (the next
        // replica, or a restarted control plane): a dial, not a backoff step.
        let mut wait = None;
        if streamed {
            failed_in_a_row = 0;
            backoff = None;
        } else {
            failed_in_a_row += 1;
            if failed_in_a_row % control_planes.len() == 0 {
                let next = backoff.map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                backoff = Some(next);
                wait = Some(next);
            }
        }
        if let Err(e) = result {
            let retry_in = wait.unwrap_or_default();
            warn!(error = %e, control_plane = %url, ?retry_in, version = state.applied_version(), "control plane link down; serving the last configuration");
        }
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

async fn stream_once(
    url: &str,
    node_id: &str,
    state: &mut ConfigState,
    streamed: &mut bool,
    cache: Option<&std::path::Path>,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<(), SyncError> {
    let mut client = connect(url, tls).await?;
    let (tx, rx) = mpsc::channel(1024);
    let hello = v1::DataPlaneMessage {
        msg: Some(data_plane_message::Msg::Hello(v1::DataPlaneHello {
            node_id: node_id.to_string(),
            applied_version: state.applied_version(),
            features: state
                .live
                .registry
                .geoip
                .as_ref()
                .map(|_| GEOIP.to_string())
                .into_iter()
                .collect(),
        })),
    };
    // The channel was just created with room; this cannot fail.
    let _ = tx.try_send(hello);
    let mut inbound = client
        .stream_config(ReceiverStream::new(rx))
        .await?
        .into_inner();
    info!(
        applied = state.applied_version(),
        "connected to the control plane"
    );
    *streamed = true;
    let outbound = state.live.registry.outbound.clone();
    outbound.set(Some(tx.clone()));
    // After the sender is set: a stop that began before is told here, one
    // that begins after finds the sender.
    if let Some(reason) = state.live.lifecycle.stopping() {
        outbound.send_stopping(reason);
    }
    // Pushes build tables on this thread and free the old ones here; once
    // they stop for a second, what they freed goes back to the system
    // (9 MB of 223 after loading 100,000 routes in 1,000 pushes).
    let mut collect_at = None;
    loop {
        let message = tokio::select! {
            message = inbound.message() => match message? {
                Some(message) => message,
                None => break,
            },
            _ = sleep_until(collect_at) => {
                crate::allocator::collect_this_thread();
                collect_at = None;
                continue;
            }
        };
        let Some(push) = take_push(state, &outbound, message.msg) else {
            continue;
        };
        let version = push.version;
        let reply = install(state, push).await;
        let acked = matches!(reply, data_plane_message::Msg::Ack(_));
        collect_at = Some(tokio::time::Instant::now() + COLLECT_AFTER);
        if tx
            .send(v1::DataPlaneMessage { msg: Some(reply) })
            .await
            .is_err()
        {
            break;
        }
        // After the ACK, so the cache write does not delay the apply.
        if let (true, Some(path)) = (acked, cache) {
            let (certificates, challenges) = state.tls_state();
            if let Err(e) =
                crate::config::cache::save(path, version, state.routes(), certificates, challenges)
            {
                warn!(error = %e, path = %path.display(), "cannot write the snapshot cache");
            }
        }
    }
    Err(SyncError::Closed)
}

/// A channel to the control plane at `url`, kept alive by HTTP/2 pings.
async fn connect(
    url: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<DataPlaneServiceClient<tonic::transport::Channel>, SyncError> {
    let mut endpoint = Endpoint::from_shared(url.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(DataPlaneServiceClient::new(channel))
}

/// A configuration push, for `install`; any other message from the control
/// plane (breaker reset, backend policy, backend test) is carried out here.
fn take_push(
    state: &ConfigState,
    outbound: &crate::config::outbound::Outbound,
    message: Option<Msg>,
) -> Option<v1::ConfigPush> {
    match message? {
        Msg::Push(push) => return Some(push),
        Msg::ResetBreaker(reset) => {
            state.live.registry.reset_breakers(&reset.route_id);
            info!(route_id = %reset.route_id, "circuit breakers reset");
            outbound.send(data_plane_message::Msg::BreakerReset(v1::BreakerReset {
                route_id: reset.route_id,
            }));
        }
        Msg::BackendPolicy(wire) => match BackendPolicy::from_wire(&wire) {
            Ok(policy) => {
                info!(deny = ?wire.deny, allow = ?wire.allow, "backend address policy");
                state.live.dns.set_policy(policy);
            }
            Err(e) => warn!(error = %e, "ignoring a backend policy that does not parse"),
        },
        Msg::Defaults(wire) => match crate::config::policy::Defaults::from_wire(&wire) {
            Ok(defaults) => {
                info!(
                    headers = defaults.headers.len(),
                    unrouted_metrics_only = defaults.unrouted_metrics_only,
                    "defaults of every route"
                );
                state.live.defaults.store(std::sync::Arc::new(defaults));
            }
            Err(e) => warn!(error = %e, "ignoring defaults that do not parse"),
        },
        Msg::BackendTest(request) => {
            tokio::spawn(backend_test(request, state.live.clone()));
        }
    }
    None
}

/// Applies a push (its backend names looked up first) and says ACK, or
/// NACK with the reason and the last good configuration kept.
async fn install(state: &mut ConfigState, push: v1::ConfigPush) -> data_plane_message::Msg {
    let version = push.version;
    let kind = match &push.body {
        Some(v1::config_push::Body::Snapshot(_)) => "snapshot",
        _ => "delta",
    };
    // Held until the table holds them.
    let _names = state
        .live
        .dns
        .prepare(&state.live.registry.names, &push)
        .await;
    match state.apply(push) {
        Ok(()) => {
            info!(
                version,
                kind,
                routes = state.live.table.load().len(),
                "applied configuration"
            );
            data_plane_message::Msg::Ack(v1::Ack { version })
        }
        Err(e) => {
            warn!(version, error = %e, "rejected configuration; keeping the last good one");
            data_plane_message::Msg::Nack(v1::Nack {
                version,
                reason: e.to_string(),
            })
        }
    }
}

/// How long pushes must stop before this thread's freed memory is collected.
const COLLECT_AFTER: Duration = Duration::from_secs(1);

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// BACKEND_TEST run here, where traffic flows, with the proxy's resolver:
/// `GET /` on the name's first address with a 5 s limit.
async fn backend_test(request: v1::BackendTestRequest, live: Arc<Live>) {
    info!(backend = %request.backend_url, "backend test");
    let failed = |error: String| ProbeResult {
        status_code: None,
        response_time_ms: 0,
        tls_valid: false,
        error: Some(error),
    };
    let result = match BackendUrl::parse(&request.backend_url) {
        Ok(url) => match live.dns.lookup_one(&url).await {
            Ok(addr) => probe::probe_at(&url, Some(addr), "/", Duration::from_secs(5)).await,
            Err(e) => failed(e),
        },
        Err(e) => failed(e.to_string()),
    };
    live.registry
        .outbound
        .send(data_plane_message::Msg::BackendTest(
            v1::BackendTestResult {
                id: request.id,
                reachable: result.status_code.is_some(),
                status_code: result.status_code.map_or(0, u32::from),
                response_time_ms: result.response_time_ms,
                tls_valid: result.tls_valid,
                error: result.error.unwrap_or_default(),
            },
        ));
}
