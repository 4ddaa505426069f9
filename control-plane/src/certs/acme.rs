//! ACME (RFC 8555) with HTTP-01: every host of an active route that no file
//! certificate covers gets a certificate. The challenge answer is pushed to
//! the data planes (and served, "OK means served", before the CA is told to
//! look), the order is finalized with a fresh ECDSA P-256 key, and the chain
//! is installed. Renewed `renew_before` the end; failures back off.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};
use portico_proto::{cert, v1};
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn, Instrument};

use super::{files, Certs, InstallError, Pending};
use crate::config::history::TlsChange;
use crate::store::Store;

pub const SOURCE: &str = "acme";
const POLL: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// A domain is not issued twice within this, whatever `renew_before` says:
/// CAs limit duplicate certificates (Let's Encrypt: 5 a week).
const MIN_REISSUE: Duration = Duration::from_secs(3600);

/// `--acme-*`.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory: String,
    pub email: String,
    /// Trust only this CA for the ACME server's HTTPS (private and test CAs).
    pub ca_root: Option<PathBuf>,
    pub renew_before: Duration,
}

/// Why one issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("making the key or request: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    #[error("installing: {0}")]
    Install(#[from] InstallError),
    #[error("the CA offers no http-01 challenge for {0} (wildcards need DNS-01, not supported)")]
    NoHttp01(String),
    #[error("authorization for {domain} is {status}")]
    Authorization { domain: String, status: String },
    #[error("the order ended {0:?}")]
    Order(OrderStatus),
    #[error("the issued certificate does not check: {0}")]
    Issued(#[from] cert::CertError),
    #[error("stored account: {0}")]
    Account(#[from] serde_json::Error),
}

/// The account as stored: its credentials, for this directory only.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The CA no longer knows or accepts the account.
fn account_rejected(e: &AcmeError) -> bool {
    let AcmeError::Protocol(instant_acme::Error::Api(problem)) = e else {
        return false;
    };
    problem
        .r#type
        .as_deref()
        .is_some_and(|t| t.ends_with(":accountDoesNotExist") || t.ends_with(":unauthorized"))
}

/// The name of the ACME certificate of `domain`.
pub fn name(domain: &str) -> String {
    format!("{SOURCE}:{domain}")
}

/// Hosts that can be validated over HTTP-01: no wildcards, no addresses.
fn orderable(host: &str) -> bool {
    !host.contains('*') && host.contains('.') && host.parse::<std::net::IpAddr>().is_err()
}

struct Manager {
    certs: Certs,
    config: AcmeConfig,
    account: Option<Account>,
    stored: Option<Vec<u8>>,
    /// Domain -> (next attempt, current backoff).
    backoff: HashMap<String, (Instant, Duration)>,
    issued: HashMap<String, Instant>,
    /// What `wanted` found, at which version and when: the hosts are read
    /// again when the configuration changes, else once a minute (renewals).
    wanted: BTreeSet<String>,
    checked: Option<(u64, Instant)>,
}

/// How often the hosts are read again while the configuration stays.
const RECHECK: Duration = Duration::from_secs(60);

/// The role of the one replica that orders certificates, when replicas
/// share a store: the others install what it stored.
pub const ROLE: &str = "acme";

/// Runs for as long as the control plane does; orders certificates while
/// this replica holds the ACME role (always, with a store of its own).
pub async fn run(
    certs: Certs,
    config: AcmeConfig,
    store: Arc<dyn Store>,
    stored_account: Option<Vec<u8>>,
) {
    let mut manager: Option<Manager> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !store.holds(ROLE) {
            if manager.take().is_some() {
                info!("another replica orders the certificates now");
            }
            continue;
        }
        let manager = match &mut manager {
            Some(manager) => manager,
            None => {
                let account = match shared_account(&store).await {
                    Ok(account) => account.or_else(|| stored_account.clone()),
                    Err(error) => {
                        warn!(%error, "cannot read the ACME account; trying again");
                        continue;
                    }
                };
                if !store.replica_id().is_empty() {
                    info!("this replica orders the certificates");
                }
                manager.insert(Manager::begin(certs.clone(), config.clone(), account).await)
            }
        };
        manager.round().await;
    }
}

/// The account as the last holder stored it, if it made one (`None` from a
/// store of one's own: the account loaded at start is current).
async fn shared_account(store: &Arc<dyn Store>) -> Result<Option<Vec<u8>>, String> {
    let store = store.clone();
    match actix_rt::task::spawn_blocking(move || store.acme_account()).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl Manager {
    /// Takes the ordering over: orders of a previous run, or of a replica
    /// that held the role before, are not resumed; their answers are
    /// withdrawn and the domains ordered again.
    async fn begin(certs: Certs, config: AcmeConfig, account: Option<Vec<u8>>) -> Manager {
        let leftover: Vec<String> = certs
            .config
            .read()
            .tls()
            .challenges
            .keys()
            .cloned()
            .collect();
        if !leftover.is_empty() {
            let change = TlsChange {
                challenges_removed: leftover,
                ..Default::default()
            };
            if let Err(e) = certs.install(change, None).await {
                warn!(error = %e, "cannot withdraw the ACME challenges of the previous run");
            }
        }
        Manager {
            certs,
            config,
            account: None,
            stored: account,
            backoff: HashMap::new(),
            issued: HashMap::new(),
            wanted: BTreeSet::new(),
            checked: None,
        }
    }

    /// Domains that need a certificate now: hosts of active routes that no
    /// file covers, without an ACME certificate or with one due for renewal.
    fn wanted(&self, now: SystemTime) -> BTreeSet<String> {
        let config = self.certs.config.read();
        let tls = &config.tls().certificates;
        let now_ms = portico_proto::time::unix_ms(now);
        let files: Vec<&Arc<v1::Certificate>> = tls
            .values()
            .filter(|c| c.source == files::SOURCE && c.not_after_unix_ms > now_ms)
            .collect();
        config
            .hosts()
            .into_iter()
            .filter(|host| orderable(host))
            .filter(|host| {
                !files
                    .iter()
                    .any(|c| c.domains.iter().any(|d| cert::covers(d, host)))
            })
            .filter(|host| match tls.get(&name(host)) {
                None => true,
                Some(c) => {
                    cert::due(c.not_after_unix_ms, self.config.renew_before, now)
                        && self
                            .issued
                            .get(*host)
                            .is_none_or(|at| at.elapsed() >= MIN_REISSUE)
                }
            })
            .map(str::to_string)
            .collect()
    }

    /// ACME certificates that ran out (their hosts lost their routes, so
    /// they were not renewed): taken out of the configuration.
    async fn drop_expired(&self, now: SystemTime) {
        let now_ms = portico_proto::time::unix_ms(now);
        let expired: Vec<String> = self
            .certs
            .current(SOURCE)
            .into_iter()
            .filter(|(_, c)| c.not_after_unix_ms <= now_ms)
            .map(|(name, _)| name)
            .collect();
        if expired.is_empty() {
            return;
        }
        info!(certificates = ?expired, "removing expired ACME certificates");
        let change = TlsChange {
            certificates_removed: expired,
            ..Default::default()
        };
        if let Err(e) = self.certs.install(change, None).await {
            warn!(error = %e, "cannot remove expired ACME certificates");
        }
    }

    async fn round(&mut self) {
        let version = self.certs.config.read().version();
        let stale = self
            .checked
            .is_none_or(|(seen, at)| seen != version || at.elapsed() >= RECHECK);
        if stale {
            self.drop_expired(SystemTime::now()).await;
            self.wanted = self.wanted(SystemTime::now());
            self.checked = Some((version, Instant::now()));
        }
        let wanted = self.wanted.clone();
        self.certs
            .status
            .lock()
            .retain(|domain, _| wanted.contains(domain));
        for domain in wanted {
            if self
                .backoff
                .get(&domain)
                .is_some_and(|(next, _)| *next > Instant::now())
            {
                continue;
            }
            self.certs
                .status
                .lock()
                .entry(domain.clone())
                .or_insert_with(|| Pending {
                    next_attempt_unix_ms: portico_proto::time::unix_ms(SystemTime::now()),
                    ..Default::default()
                });
            let span = info_span!("acme", %domain);
            match self.issue(&domain).instrument(span).await {
                Ok(()) => {
                    self.backoff.remove(&domain);
                    self.certs.status.lock().remove(&domain);
                    self.issued.insert(domain, Instant::now());
                }
                Err(e) => {
                    let step = self
                        .backoff
                        .get(&domain)
                        .map_or(FIRST_BACKOFF, |(_, s)| (*s * 2).min(MAX_BACKOFF));
                    warn!(%domain, error = %e, retry_in = ?step, "certificate not obtained; will retry");
                    if account_rejected(&e) {
                        // Unknown to the server (a CA that lost its state):
                        // the next attempt makes a new account.
                        self.account = None;
                    }
                    self.backoff
                        .insert(domain.clone(), (Instant::now() + step, step));
                    let next = SystemTime::now() + step;
                    self.certs.status.lock().insert(
                        domain,
                        Pending {
                            last_error: Some(e.to_string()),
                            next_attempt_unix_ms: portico_proto::time::unix_ms(next),
                        },
                    );
                }
            }
        }
    }

    /// The account: the stored one for this directory, else a new one (stored).
    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let builder = || match &self.config.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        // Kept until the account is up: a CA that is down now keeps it.
        let parsed = self
            .stored
            .as_deref()
            .map(serde_json::from_slice::<StoredAccount>);
        let stored = match parsed {
            Some(Ok(stored)) => Some(stored),
            Some(Err(e)) => {
                warn!(error = %e, "the stored ACME account does not parse; making a new one");
                self.stored = None;
                None
            }
            None => None,
        };
        let account = match stored.filter(|s| s.directory == self.config.directory) {
            Some(stored) => builder()?.from_credentials(stored.credentials).await?,
            None => {
                let contact = format!("mailto:{}", self.config.email);
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount {
                            contact: &[&contact],
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await?;
                let stored = serde_json::to_vec(&StoredAccount {
                    directory: self.config.directory.clone(),
                    credentials,
                })?;
                self.certs
                    .install(TlsChange::default(), Some(stored))
                    .await?;
                info!(directory = %self.config.directory, account = %account.id(), "ACME account created");
                account
            }
        };
        self.stored = None;
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order for `domain`, start to end; its challenge answers are
    /// withdrawn whatever happens.
    async fn issue(&mut self, domain: &str) -> Result<(), AcmeError> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(domain.to_string())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut published = Vec::new();
        let result = self
            .authorize_and_finalize(&mut order, domain, &mut published)
            .await;
        let (certificate, outcome) = match result {
            Ok(cert) => (Some(Arc::new(cert)), Ok(())),
            Err(e) => (None, Err(e)),
        };
        let change = TlsChange {
            certificates: certificate.into_iter().collect(),
            challenges_removed: published,
            ..Default::default()
        };
        if !change.is_empty() {
            self.certs.install(change, None).await?;
        }
        outcome
    }

    async fn authorize_and_finalize(
        &self,
        order: &mut instant_acme::Order,
        domain: &str,
        published: &mut Vec<String>,
    ) -> Result<v1::Certificate, AcmeError> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                status => {
                    return Err(AcmeError::Authorization {
                        domain: domain.to_string(),
                        status: format!("{status:?}"),
                    })
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::NoHttp01(domain.to_string()))?;
            let answer = v1::AcmeChallenge {
                token: challenge.token.clone(),
                key_authorization: challenge.key_authorization().as_str().to_string(),
            };
            published.push(answer.token.clone());
            let version = self
                .certs
                .install(
                    TlsChange {
                        challenges: vec![answer],
                        ..Default::default()
                    },
                    None,
                )
                .await?;
            info!(
                version,
                "challenge answer served by the data planes; asking the CA to validate"
            );
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order(status));
        }
        let (csr, key_pem) = request(domain)?;
        order.finalize_csr(&csr).await?;
        let chain = order.poll_certificate(&retries).await?;
        let checked = cert::check(chain.as_bytes(), key_pem.as_bytes(), SystemTime::now())?;
        Ok(cert::to_wire(
            &name(domain),
            SOURCE,
            &chain,
            &key_pem,
            &checked,
        ))
    }
}

/// A certificate request for `domain` with a fresh P-256 key: (DER, key PEM).
fn request(domain: &str) -> Result<(Vec<u8>, String), openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut req = X509ReqBuilder::new()?;
    req.set_pubkey(&key)?;
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_text("CN", domain)?;
    req.set_subject_name(&subject.build())?;
    let san = SubjectAlternativeName::new()
        .dns(domain)
        .build(&req.x509v3_context(None))?;
    let mut extensions = Stack::new()?;
    extensions.push(san)?;
    req.add_extensions(&extensions)?;
    req.sign(&key, MessageDigest::sha256())?;
    let pem = key.private_key_to_pem_pkcs8()?;
    Ok((
        req.build().to_der()?,
        String::from_utf8(pem).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_ordered() {
        assert!(orderable("acme.test"));
        assert!(!orderable("*.w.test"));
        assert!(!orderable("127.0.0.1"));
        assert!(!orderable("localhost"));
    }

    #[test]
    fn a_request_names_the_domain_and_carries_a_p256_key() {
        let (der, key) = request("acme.test").unwrap();
        let req = openssl::x509::X509Req::from_der(&der).unwrap();
        let key = PKey::private_key_from_pem(key.as_bytes()).unwrap();
        assert!(req.verify(&key).unwrap());
        assert_eq!(key.bits(), 256);
    }
}
