//! Certificates at the edge, managed here and pushed with the configuration:
//! pairs from a watched directory (`files`) and from ACME (`acme`). Each
//! change is one commit; a new certificate is announced with `cert_renewed`
//! once the data planes acknowledged it.

pub mod acme;
pub mod files;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Addr;
use portico_proto::cert::covers;
use portico_proto::v1;
use serde_json::json;

use crate::config::committer::{ChangeTls, Committer, ProposeError};
use crate::config::global::SharedConfig;
use crate::config::history::TlsChange;
use crate::planes::publisher::{ListPlanes, Publisher};
use crate::protocol::EventType;
use crate::session::{Directory, RouteEvent};

/// Why a certificate change was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("the control plane is stopping")]
    Stopping,
}

/// A domain waiting for its ACME certificate.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub last_error: Option<String>,
    pub next_attempt_unix_ms: i64,
}

/// ACME work in progress, by domain, for operators.
pub type AcmeStatus = Arc<parking_lot::Mutex<BTreeMap<String, Pending>>>;

/// What both certificate sources install through.
#[derive(Clone)]
pub struct Certs {
    /// Commits certificate changes.
    pub committer: Addr<Committer>,
    /// Finds the sessions to tell of a renewed certificate.
    pub directory: Arc<Directory>,
    pub config: SharedConfig,
    pub status: AcmeStatus,
}

impl Certs {
    pub fn new(
        committer: Addr<Committer>,
        directory: Arc<Directory>,
        config: SharedConfig,
    ) -> Self {
        Certs {
            committer,
            directory,
            config,
            status: AcmeStatus::default(),
        }
    }

    /// Commits `change` (and the ACME account), waits until the fleet
    /// acknowledged it, then announces each new certificate.
    pub async fn install(
        &self,
        change: TlsChange,
        acme_account: Option<Vec<u8>>,
    ) -> Result<Option<u64>, InstallError> {
        let installed = change.certificates.clone();
        let applied = self
            .committer
            .send(ChangeTls {
                change,
                acme_account,
            })
            .await
            .map_err(|_| InstallError::Stopping)??;
        let version = applied.version;
        applied.acknowledged().await;
        for cert in installed {
            tracing::info!(certificate = %cert.name, domains = ?cert.domains, version, serial = %cert.serial, "certificate installed");
            self.announce(&cert);
        }
        Ok(version)
    }

    /// `cert_renewed` to every session with an active route the certificate covers.
    fn announce(&self, cert: &v1::Certificate) {
        let sessions = self
            .config
            .read()
            .sessions_on(|host| cert.domains.iter().any(|d| covers(d, host)));
        let not_after =
            portico_proto::time::rfc3339(portico_proto::time::from_unix_ms(cert.not_after_unix_ms));
        let payload = json!({
            "domains": cert.domains,
            "not_after": not_after,
            "source": cert.source,
        });
        for id in sessions {
            if let Some(session) = self.directory.lookup(&id) {
                session.do_send(RouteEvent {
                    event: EventType::CertRenewed,
                    payload: payload.clone(),
                });
            }
        }
    }

    /// The certificates held now from `source`, by name.
    pub fn current(&self, source: &str) -> BTreeMap<String, Arc<v1::Certificate>> {
        self.config
            .read()
            .tls()
            .certificates
            .iter()
            .filter(|(_, c)| c.source == source)
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect()
    }
}

/// The operators' list: every certificate (never its key) with the data
/// planes that acknowledged it, and the ACME domains still waiting.
pub async fn list(
    config: &SharedConfig,
    status: &AcmeStatus,
    publisher: &Addr<Publisher>,
) -> Result<v1::ListCertificatesResponse, actix::MailboxError> {
    let planes = publisher.send(ListPlanes).await?;
    let config = config.read();
    let tls = config.tls();
    let certificates = tls
        .certificates
        .values()
        .map(|c| {
            let since = tls.since.get(&c.name).copied().unwrap_or(u64::MAX);
            v1::CertificateInfo {
                name: c.name.clone(),
                domains: c.domains.clone(),
                source: c.source.clone(),
                not_after_unix_ms: c.not_after_unix_ms,
                serial: c.serial.clone(),
                served_by: planes
                    .data_planes
                    .iter()
                    .filter(|p| p.acked_version >= since && p.state != "gone")
                    .map(|p| p.node_id.clone())
                    .collect(),
            }
        })
        .collect();
    let pending = status
        .lock()
        .iter()
        .map(|(domain, p)| v1::CertificatePending {
            domain: domain.clone(),
            last_error: p.last_error.clone().unwrap_or_default(),
            next_attempt_unix_ms: p.next_attempt_unix_ms,
        })
        .collect();
    Ok(v1::ListCertificatesResponse {
        version: config.version(),
        certificates,
        pending,
    })
}

/// The operators' list as JSON (porticoctl `certs --json`, the dashboard):
/// each certificate with its days left at `now_ms`, and the ACME domains
/// waiting.
pub fn list_json(list: &v1::ListCertificatesResponse, now_ms: i64) -> serde_json::Value {
    use portico_proto::time::{from_unix_ms, rfc3339};
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let time = |ms: i64| (ms > 0).then(|| rfc3339(from_unix_ms(ms)));
    let certificates: Vec<serde_json::Value> = list
        .certificates
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "domains": c.domains,
                "source": c.source,
                "not_after": time(c.not_after_unix_ms),
                "days_left": (c.not_after_unix_ms - now_ms).div_euclid(DAY_MS),
                "serial": c.serial,
                "served_by": c.served_by,
            })
        })
        .collect();
    let pending: Vec<serde_json::Value> = list
        .pending
        .iter()
        .map(|p| {
            serde_json::json!({
                "domain": p.domain,
                "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
                "next_attempt": time(p.next_attempt_unix_ms),
            })
        })
        .collect();
    serde_json::json!({ "version": list.version, "certificates": certificates, "pending": pending })
}
