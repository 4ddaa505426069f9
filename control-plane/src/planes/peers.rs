//! The other replicas sharing the etcd prefix (docs/HA.md), found through
//! their records: this replica passes its data planes' reports on to each,
//! so telemetry, breaker states and health events reach every session
//! whichever replica runs it, and asks them to reset a route's breakers or
//! to test a backend from their data planes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use portico_proto::v1;
use portico_proto::v1::replica_service_client::ReplicaServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::store::Store;

/// How often the replicas' records are read for newcomers.
const REFRESH: Duration = Duration::from_secs(1);

struct Link {
    reports: mpsc::UnboundedSender<v1::PeerReport>,
    grpc: String,
    task: tokio::task::JoinHandle<()>,
}

pub struct Peers {
    store: Arc<dyn Store>,
    tls: portico_proto::tls::TlsFiles,
    links: Mutex<HashMap<String, Link>>,
}

impl Peers {
    pub fn new(store: Arc<dyn Store>, tls: portico_proto::tls::TlsFiles) -> Arc<Peers> {
        Arc::new(Peers {
            store,
            tls,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps a link to every live replica but this one; links to replicas
    /// that went are dropped, and a broken one is made again.
    pub async fn run(self: Arc<Self>) {
        if self.store.replica_id().is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(REFRESH);
        loop {
            tick.tick().await;
            let store = self.store.clone();
            let Ok(Ok(replicas)) = tokio::task::spawn_blocking(move || store.replicas()).await
            else {
                continue;
            };
            let here = self.store.replica_id();
            let mut links = self.links.lock();
            links.retain(|id, link| {
                let live = replicas.iter().any(|r| &r.id == id && r.grpc == link.grpc);
                if !live || link.task.is_finished() {
                    link.task.abort();
                }
                live && !link.task.is_finished()
            });
            for replica in replicas.iter().filter(|r| r.id != here) {
                if !links.contains_key(&replica.id) {
                    links.insert(replica.id.clone(), self.link(&replica.grpc));
                }
            }
        }
    }

    fn url(&self, grpc: &str) -> String {
        let scheme = if self.tls.enabled() { "https" } else { "http" };
        format!("{scheme}://{grpc}")
    }

    /// Where replica `id` takes gRPC calls, if it is live: from the links,
    /// or from the store for one that started since the last look.
    pub async fn address(&self, id: &str) -> Option<String> {
        if let Some(link) = self.links.lock().get(id) {
            return Some(link.grpc.clone());
        }
        let store = self.store.clone();
        let replicas = tokio::task::spawn_blocking(move || store.replicas())
            .await
            .ok()?
            .ok()?;
        replicas.into_iter().find(|r| r.id == id).map(|r| r.grpc)
    }

    pub async fn client(
        &self,
        grpc: &str,
    ) -> anyhow::Result<ReplicaServiceClient<tonic::transport::Channel>> {
        let url = self.url(grpc);
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(2));
        if let Some(tls) = self.tls.client(&url)? {
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(ReplicaServiceClient::new(endpoint.connect().await?))
    }

    fn link(self: &Arc<Self>, grpc: &str) -> Link {
        let (reports, rx) = mpsc::unbounded_channel();
        let (peers, target) = (self.clone(), grpc.to_string());
        let task = tokio::spawn(async move {
            let result = async {
                let mut client = peers.client(&target).await?;
                client
                    .share_reports(UnboundedReceiverStream::new(rx))
                    .await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(error) = result {
                tracing::debug!(peer = %target, %error, "link to a replica ended");
            }
        });
        Link {
            reports,
            grpc: grpc.to_string(),
            task,
        }
    }

    /// Passes a data plane's report on to every other replica.
    pub fn share(&self, node_id: &str, message: &v1::DataPlaneMessage) {
        let links = self.links.lock();
        for link in links.values() {
            let _ = link.reports.send(v1::PeerReport {
                node_id: node_id.to_string(),
                message: Some(message.clone()),
            });
        }
    }

    /// Asks the other replicas, one after another, to run a backend test
    /// from one of their data planes; the first answer, or `None` when none
    /// has a data plane or `within` passed.
    pub async fn backend_test(
        self: &Arc<Self>,
        url: &str,
        within: Duration,
    ) -> Option<v1::BackendTestResult> {
        let targets: Vec<String> = self.links.lock().values().map(|l| l.grpc.clone()).collect();
        let ask = async {
            for grpc in targets {
                let Ok(mut client) = self.client(&grpc).await else {
                    continue;
                };
                let request = v1::PeerBackendTest {
                    url: url.to_string(),
                };
                if let Ok(done) = client.backend_test(request).await {
                    if let Some(result) = done.into_inner().result {
                        return Some(result);
                    }
                }
            }
            None
        };
        tokio::time::timeout(within, ask).await.ok().flatten()
    }

    /// Asks replica `id` to let go of session `key` (before this one takes
    /// it over), waiting at most `within`; false when it did not answer
    /// (gone, or unreachable).
    pub async fn release(&self, id: &str, key: &str, within: Duration) -> bool {
        let ask = async {
            let grpc = self.address(id).await?;
            let mut client = self.client(&grpc).await.ok()?;
            let request = v1::PeerRelease {
                session_key: key.to_string(),
            };
            client.release(request).await.ok()
        };
        tokio::time::timeout(within, ask)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    /// Asks every other replica to close a route's breakers on its data
    /// planes; returns once each answered or `within` passed.
    pub async fn reset_breaker(self: &Arc<Self>, route_id: &str, within: Duration) {
        let targets: Vec<String> = self.links.lock().values().map(|l| l.grpc.clone()).collect();
        let asks = targets.into_iter().map(|grpc| {
            let request = v1::PeerBreakerReset {
                route_id: route_id.to_string(),
            };
            async move {
                let mut client = self.client(&grpc).await.ok()?;
                client.reset_breaker(request).await.ok()
            }
        });
        let _ = tokio::time::timeout(within, futures::future::join_all(asks)).await;
    }
}
