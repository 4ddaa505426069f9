//! The gRPC face of the control plane: the stream every data plane dials,
//! the operators' API and what replicas ask each other.

use std::sync::Arc;

use actix::Addr;
use portico_proto::v1::{
    self, data_plane_message::Msg, data_plane_service_server::DataPlaneService,
    replica_service_server::ReplicaService,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::observe::telemetry::Telemetry;
use crate::planes::plane_commands::PlaneCommands;
use crate::planes::publisher::{
    CurrentSnapshot, ListPlanes, PlaneConnected, PlaneGone, PlaneReply, PlaneStopping, Publisher,
    Watch,
};
use crate::protocol::EventType;
use crate::session::{Directory, RouteEvent, Sessions};
use portico_proto::backend_policy::BackendPolicy;
use portico_proto::v1::operator_service_server::OperatorService;

/// What the planes' services reach on the sessions' side: the telemetry
/// their reports feed, the sessions their events go to, the commands relayed
/// to data planes, and the backend policy each plane is told first.
pub struct PlaneSide {
    pub directory: Arc<Directory>,
    /// Which session owns a route, for the events of its reports.
    pub config: crate::config::global::SharedConfig,
    pub telemetry: Telemetry,
    pub planes: PlaneCommands,
    pub backend_policy: BackendPolicy,
}

pub struct DataPlaneApi {
    publisher: Addr<Publisher>,
    side: Arc<PlaneSide>,
    /// The gRPC listener speaks TLS, so private keys may go to any plane.
    tls: bool,
}

impl DataPlaneApi {
    pub fn new(publisher: Addr<Publisher>, side: Arc<PlaneSide>, tls: bool) -> Self {
        DataPlaneApi {
            publisher,
            side,
            tls,
        }
    }
}

/// What a data plane's stream carries.
type Pushes = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<v1::ControlPlaneMessage, Status>> + Send + 'static>,
>;

/// Takes the certificates (with their keys) out of a push: for a plane
/// reached in plain text beyond loopback. Removals still go through.
fn without_keys(mut message: v1::ControlPlaneMessage) -> v1::ControlPlaneMessage {
    use v1::config_push::Body;
    if let Some(v1::control_plane_message::Msg::Push(push)) = &mut message.msg {
        match &mut push.body {
            Some(Body::Snapshot(s)) => s.certificates.clear(),
            Some(Body::Delta(d)) => d.certificates_upserted.clear(),
            None => {}
        }
    }
    message
}

/// Tells the session owning a route, which forwards it if subscribed.
fn announce(side: &PlaneSide, route_id: &str, event: EventType, payload: serde_json::Value) {
    let owner = side.config.read().session_of(route_id).map(str::to_string);
    if let Some(session) = owner.and_then(|key| side.directory.lookup(&key)) {
        session.do_send(RouteEvent { event, payload });
    }
}

/// Takes in a data plane's telemetry, breaker change or breaker reset,
/// from its stream here or passed on by the replica holding it: merged
/// into the telemetry, with events to the sessions this replica runs.
fn report(side: &PlaneSide, node_id: &str, message: v1::DataPlaneMessage) {
    match message.msg {
        Some(Msg::Telemetry(report)) => {
            for stats in &report.routes {
                for (country, count) in &stats.geo_blocked {
                    let payload = json!({
                        "route_id": stats.route_id,
                        "country": country,
                        "count": count,
                        "node_id": node_id,
                    });
                    announce(side, &stats.route_id, EventType::GeoBlocked, payload);
                }
            }
            for change in side.telemetry.record(node_id, report) {
                let payload = json!({
                    "route_id": change.route_id,
                    "backend": change.backend_url,
                    "healthy": change.healthy,
                    "reason": change.reason,
                });
                announce(
                    side,
                    &change.route_id,
                    EventType::BackendHealthChanged,
                    payload,
                );
            }
        }
        Some(Msg::BreakerChange(v1::BreakerChange { state: Some(state) })) => {
            let payload = json!({
                "route_id": state.route_id,
                "backend": state.backend_url,
                "node_id": node_id,
                "state": state.state,
                "failures": state.failures,
            });
            let route_id = state.route_id.clone();
            side.telemetry.breaker_changed(node_id, state);
            announce(side, &route_id, EventType::CircuitBreakerChanged, payload);
        }
        // After every report this plane sent before its reset.
        Some(Msg::BreakerReset(reset)) => side
            .telemetry
            .forget_breakers(&reset.route_id, Some(node_id)),
        _ => {}
    }
}

/// What replicas sharing an etcd prefix ask each other (docs/HA.md).
pub struct ReplicaApi {
    side: Arc<PlaneSide>,
    /// The sessions relayed commands run on.
    sessions: Arc<Sessions>,
}

impl ReplicaApi {
    pub fn new(side: Arc<PlaneSide>, sessions: Arc<Sessions>) -> Self {
        ReplicaApi { side, sessions }
    }
}

/// What a relay stream carries back.
type RelayedLines =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::RelayDown, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ReplicaService for ReplicaApi {
    type RelayStream = RelayedLines;

    async fn relay(
        &self,
        request: Request<Streaming<v1::RelayUp>>,
    ) -> Result<Response<RelayedLines>, Status> {
        let meant_for = request
            .metadata()
            .get(crate::registry::forward::REPLICA_HEADER)
            .and_then(|v| v.to_str().ok());
        let here = self.sessions.replica_id();
        if meant_for != Some(here) {
            return Err(Status::failed_precondition(format!(
                "this is replica {here}, not {}",
                meant_for.unwrap_or("?")
            )));
        }
        let peer = request
            .remote_addr()
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (down, lines) = mpsc::channel(64);
        tokio::spawn(crate::registry::relay::serve(
            request.into_inner(),
            peer,
            self.sessions.clone(),
            down,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(lines),
        )))
    }

    async fn share_reports(
        &self,
        request: Request<Streaming<v1::PeerReport>>,
    ) -> Result<Response<v1::PeerReportsDone>, Status> {
        let mut reports = request.into_inner();
        while let Some(shared_report) = reports.message().await? {
            if let Some(message) = shared_report.message {
                report(&self.side, &shared_report.node_id, message);
            }
        }
        Ok(Response::new(v1::PeerReportsDone {}))
    }

    async fn release(
        &self,
        request: Request<v1::PeerRelease>,
    ) -> Result<Response<v1::PeerReleaseDone>, Status> {
        let key = request.into_inner().session_key;
        let directory = &self.sessions.directory;
        if let Some(addr) = directory.take_for_release(&key) {
            let _ = addr.send(crate::session::Surrender).await;
            directory.released(&key);
        }
        Ok(Response::new(v1::PeerReleaseDone {}))
    }

    async fn reset_breaker(
        &self,
        request: Request<v1::PeerBreakerReset>,
    ) -> Result<Response<v1::PeerBreakerResetDone>, Status> {
        let route_id = request.into_inner().route_id;
        self.side.planes.reset_here(&route_id).await;
        Ok(Response::new(v1::PeerBreakerResetDone {}))
    }

    async fn backend_test(
        &self,
        request: Request<v1::PeerBackendTest>,
    ) -> Result<Response<v1::PeerBackendTestDone>, Status> {
        let url = request.into_inner().url;
        let result = match self.side.planes.backend_test_here(&url).await {
            crate::planes::plane_commands::Tested::Answered(result) => Some(result),
            _ => None,
        };
        Ok(Response::new(v1::PeerBackendTestDone { result }))
    }
}

#[tonic::async_trait]
impl DataPlaneService for DataPlaneApi {
    type StreamConfigStream = Pushes;

    async fn stream_config(
        &self,
        request: Request<Streaming<v1::DataPlaneMessage>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let remote = request.remote_addr();
        let address = remote.map(|a| a.to_string()).unwrap_or_default();
        let keys_allowed = self.tls || remote.is_some_and(|a| a.ip().is_loopback());
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(v1::DataPlaneMessage {
                msg: Some(Msg::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ))
            }
        };
        if hello.node_id.is_empty() {
            return Err(Status::invalid_argument("hello: node_id is empty"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // First on the stream, before any push: which addresses may be dialled.
        let policy = self.side.backend_policy.to_wire();
        let _ = tx.send(Ok(v1::ControlPlaneMessage {
            msg: Some(v1::control_plane_message::Msg::BackendPolicy(policy)),
        }));
        let conn = self
            .publisher
            .send(PlaneConnected {
                node_id: hello.node_id.clone(),
                address: address.clone(),
                applied_version: hello.applied_version,
                tx,
                features: hello.features.clone(),
            })
            .await
            .map_err(|_| Status::unavailable("control plane is shutting down"))?;
        let publisher = self.publisher.clone();
        let side = self.side.clone();
        let node_id = hello.node_id.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(v1::DataPlaneMessage {
                        msg: Some(Msg::Ack(ack)),
                    })) => {
                        publisher.do_send(PlaneReply::Ack {
                            conn,
                            version: ack.version,
                        });
                    }
                    Ok(Some(v1::DataPlaneMessage {
                        msg: Some(Msg::Nack(nack)),
                    })) => {
                        publisher.do_send(PlaneReply::Nack {
                            conn,
                            version: nack.version,
                            reason: nack.reason,
                        });
                    }
                    Ok(Some(
                        message @ v1::DataPlaneMessage {
                            msg:
                                Some(
                                    Msg::Telemetry(_)
                                    | Msg::BreakerChange(_)
                                    | Msg::BreakerReset(_),
                                ),
                        },
                    )) => {
                        side.planes.peers.share(&node_id, &message);
                        let reset = match &message.msg {
                            Some(Msg::BreakerReset(reset)) => Some(reset.route_id.clone()),
                            _ => None,
                        };
                        report(&side, &node_id, message);
                        if let Some(route_id) = reset {
                            publisher.do_send(PlaneReply::BreakerReset { conn, route_id });
                        }
                    }
                    Ok(Some(v1::DataPlaneMessage {
                        msg: Some(Msg::BackendTest(result)),
                    })) => {
                        publisher.do_send(PlaneReply::BackendTest(result));
                    }
                    Ok(Some(v1::DataPlaneMessage {
                        msg: Some(Msg::Stopping(stopping)),
                    })) => {
                        publisher.do_send(PlaneStopping {
                            conn,
                            reason: stopping.reason,
                        });
                    }
                    Ok(Some(other)) => warn!(conn, ?other, "unexpected message from data plane"),
                    Ok(None) => break,
                    Err(status) => {
                        debug!(conn, %status, "data plane stream ended");
                        break;
                    }
                }
            }
            side.telemetry.forget_node(&node_id);
            publisher.do_send(PlaneGone { conn });
        });
        let pushes = UnboundedReceiverStream::new(rx);
        if keys_allowed {
            return Ok(Response::new(Box::pin(pushes)));
        }
        warn!(node_id = %hello.node_id, %address, "the link to this data plane is neither TLS nor loopback: certificates and their private keys are not sent to it (start the control plane with --tls-cert and --tls-key)");
        Ok(Response::new(Box::pin(futures::StreamExt::map(
            pushes,
            |m| m.map(without_keys),
        ))))
    }
}

/// The operator API: what is pushed, to whom, and what they answered.
pub struct OperatorApi {
    publisher: Addr<Publisher>,
    config: crate::config::global::SharedConfig,
    acme: crate::certs::AcmeStatus,
    /// This replica as it announces itself, and the store that lists the others.
    replica: crate::store::ReplicaRecord,
    store: Arc<dyn crate::store::Store>,
    sites: crate::sites::status::SitesBoard,
}

impl OperatorApi {
    pub fn new(
        publisher: Addr<Publisher>,
        config: crate::config::global::SharedConfig,
        acme: crate::certs::AcmeStatus,
        replica: crate::store::ReplicaRecord,
        store: Arc<dyn crate::store::Store>,
        sites: crate::sites::status::SitesBoard,
    ) -> Self {
        OperatorApi {
            publisher,
            config,
            acme,
            replica,
            store,
            sites,
        }
    }
}

fn unavailable(_: actix::MailboxError) -> Status {
    Status::unavailable("control plane is shutting down")
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    type WatchConfigStream = UnboundedReceiverStream<Result<v1::WatchEvent, Status>>;

    async fn watch_config(
        &self,
        _: Request<v1::WatchConfigRequest>,
    ) -> Result<Response<Self::WatchConfigStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.publisher.send(Watch(tx)).await.map_err(unavailable)?;
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn list_data_planes(
        &self,
        _: Request<v1::ListDataPlanesRequest>,
    ) -> Result<Response<v1::ListDataPlanesResponse>, Status> {
        Ok(Response::new(
            self.publisher.send(ListPlanes).await.map_err(unavailable)?,
        ))
    }

    async fn list_certificates(
        &self,
        _: Request<v1::ListCertificatesRequest>,
    ) -> Result<Response<v1::ListCertificatesResponse>, Status> {
        crate::certs::list(&self.config, &self.acme, &self.publisher)
            .await
            .map(Response::new)
            .map_err(unavailable)
    }

    async fn list_replicas(
        &self,
        _: Request<v1::ListReplicasRequest>,
    ) -> Result<Response<v1::ListReplicasResponse>, Status> {
        let replicas = crate::store::live_replicas(self.store.clone(), &self.replica)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(v1::ListReplicasResponse { replicas }))
    }

    async fn list_sites(
        &self,
        _: Request<v1::ListSitesRequest>,
    ) -> Result<Response<v1::ListSitesResponse>, Status> {
        Ok(Response::new(self.sites.lock().to_wire()))
    }

    async fn get_snapshot(
        &self,
        _: Request<v1::GetSnapshotRequest>,
    ) -> Result<Response<v1::GetSnapshotResponse>, Status> {
        Ok(Response::new(
            self.publisher
                .send(CurrentSnapshot)
                .await
                .map_err(unavailable)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_without_keys_keeps_everything_but_the_certificates() {
        let cert = v1::Certificate {
            name: "file:a".into(),
            key_pem: "secret".into(),
            ..Default::default()
        };
        let push = |body| v1::ControlPlaneMessage {
            msg: Some(v1::control_plane_message::Msg::Push(v1::ConfigPush {
                version: 2,
                body: Some(body),
                ..Default::default()
            })),
        };
        let delta = v1::Delta {
            removed: vec!["r1".into()],
            certificates_upserted: vec![cert.clone()],
            certificates_removed: vec!["file:b".into()],
            ..Default::default()
        };
        let stripped = without_keys(push(v1::config_push::Body::Delta(delta.clone())));
        let expected = v1::Delta {
            certificates_upserted: vec![],
            ..delta
        };
        assert_eq!(stripped, push(v1::config_push::Body::Delta(expected)));
        let snapshot = v1::Snapshot {
            certificates: vec![cert],
            ..Default::default()
        };
        let stripped = without_keys(push(v1::config_push::Body::Snapshot(snapshot)));
        assert!(!format!("{stripped:?}").contains("secret"));
    }
}
