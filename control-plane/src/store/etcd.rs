//! The state kept in etcd (`--store etcd`): the same records as the embedded
//! store, under one key prefix, each batch one transaction conditioned on
//! the version this control plane last saw, so a writer it does not know of
//! can never be overwritten silently.

use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};

use super::{Batch, Loaded, MemberRecord, SessionRecord, Store, StoreError, FORMAT};

/// How long one etcd call may take before the store counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EtcdStore {
    endpoints: String,
    prefix: String,
    client: Client,
    /// etcd's client is async; the store's callers are not (the committer
    /// holds the configuration's lock across a commit, as it does an
    /// fsync), so calls run on a runtime of the store's own. Taken on drop.
    runtime: Option<tokio::runtime::Runtime>,
    /// The version this control plane last read or wrote.
    version: parking_lot::Mutex<u64>,
}

fn key(prefix: &str, rest: &str) -> String {
    format!("{prefix}/{rest}")
}

impl EtcdStore {
    /// Connects to `endpoints` and stamps (or checks) the format under `prefix`.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        let prefix = prefix.trim_end_matches('/').to_string();
        let joined = endpoints.join(",");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portico-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd {
                endpoints: joined.clone(),
                reason: e.to_string(),
            })?;
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let eps = endpoints.to_vec();
        let (tx, rx) = mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(Client::connect(eps, Some(options)).await);
        });
        let client = rx
            .recv()
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| StoreError::Etcd {
                endpoints: joined.clone(),
                reason,
            })?;
        let store = EtcdStore {
            endpoints: joined,
            prefix,
            client,
            runtime: Some(runtime),
            version: parking_lot::Mutex::new(0),
        };
        store.init()?;
        Ok(store)
    }

    fn failed(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            reason: reason.to_string(),
        }
    }

    /// Runs `call` on the store's runtime and waits for it, from any thread
    /// (also one that runs another runtime).
    fn run<T: Send + 'static>(
        &self,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| self.failed("the store is closed"))?;
        let (tx, rx) = mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(CALL_TIMEOUT, call).await);
        });
        match rx.recv() {
            Ok(Ok(result)) => result.map_err(|e| self.failed(e)),
            Ok(Err(_)) => Err(self.failed(format!("no answer within {CALL_TIMEOUT:?}"))),
            Err(_) => Err(self.failed("the store's runtime stopped")),
        }
    }

    fn init(&self) -> Result<(), StoreError> {
        let format = key(&self.prefix, "meta/format");
        let version = key(&self.prefix, "meta/version");
        let mut client = self.client.clone();
        let txn = Txn::new()
            .when([Compare::create_revision(
                format.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(format.clone(), FORMAT.to_string(), None),
                TxnOp::put(version, "0", None),
            ])
            .or_else([TxnOp::get(format.clone(), None)]);
        let response = self.run(async move { client.txn(txn).await })?;
        if response.succeeded() {
            return Ok(());
        }
        let found = response
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        match found {
            Some(FORMAT) => Ok(()),
            Some(found) => Err(StoreError::EtcdFormat {
                prefix: self.prefix.clone(),
                found,
            }),
            None => Err(self.failed(format!("{format} is not a number"))),
        }
    }
}

impl Drop for EtcdStore {
    /// Without waiting: the store may be dropped on a thread that runs
    /// another runtime, where blocking is not allowed.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let mut client = self.client.clone();
        let prefix = format!("{}/", self.prefix);
        let response = self.run(async move {
            client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
        })?;
        let mut loaded = Loaded::default();
        let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            reason: format!("{what}: {e}"),
        };
        for kv in response.kvs() {
            let Some(rest) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(&self.prefix))
                .and_then(|k| k.strip_prefix('/'))
            else {
                continue;
            };
            let value = kv.value();
            if rest == "meta/version" {
                loaded.version = number(value).unwrap_or(0);
            } else if rest == "meta/route_reserved" {
                loaded.route_reserved = number(value).unwrap_or(0);
            } else if let Some(id) = rest.strip_prefix("sessions/") {
                let record: SessionRecord = serde_json::from_slice(value)
                    .map_err(|e| corrupt(&format!("session {id}"), &e))?;
                loaded.sessions.push(record);
            } else if let Some(node) = rest.strip_prefix("fleet/") {
                let record: MemberRecord = serde_json::from_slice(value)
                    .map_err(|e| corrupt(&format!("data plane {node}"), &e))?;
                loaded.fleet.push(record);
            } else if let Some(name) = rest.strip_prefix("tls/cert/") {
                let cert = <portico_proto::v1::Certificate as prost::Message>::decode(value)
                    .map_err(|e| corrupt(&format!("certificate {name}"), &e))?;
                loaded.certificates.push(cert);
            } else if let Some(token) = rest.strip_prefix("tls/challenge/") {
                let answer = String::from_utf8_lossy(value).into_owned();
                loaded.challenges.push((token.to_string(), answer));
            } else if rest == "tls/acme/account" {
                loaded.acme_account = Some(value.to_vec());
            }
        }
        *self.version.lock() = loaded.version;
        Ok(loaded)
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let k = |rest: String| key(&self.prefix, &rest);
        let mut ops = Vec::new();
        // Held across the transaction: this process's writers (committer,
        // publisher, route-id reservations) go one at a time, as redb's do,
        // so they never trip over each other's version.
        let mut version = self.version.lock();
        let expected = *version;
        if let Some(v) = batch.version {
            ops.push(TxnOp::put(k("meta/version".into()), v.to_string(), None));
        }
        if let Some(r) = batch.route_reserved {
            ops.push(TxnOp::put(
                k("meta/route_reserved".into()),
                r.to_string(),
                None,
            ));
        }
        for id in &batch.delete {
            ops.push(TxnOp::delete(k(format!("sessions/{id}")), None));
        }
        for record in &batch.put {
            let bytes = serde_json::to_vec(record).map_err(|e| self.failed(e))?;
            ops.push(TxnOp::put(
                k(format!("sessions/{}", record.id)),
                bytes,
                None,
            ));
        }
        for node in &batch.fleet_delete {
            ops.push(TxnOp::delete(k(format!("fleet/{node}")), None));
        }
        for member in &batch.fleet_put {
            let bytes = serde_json::to_vec(member).map_err(|e| self.failed(e))?;
            ops.push(TxnOp::put(
                k(format!("fleet/{}", member.node_id)),
                bytes,
                None,
            ));
        }
        for name in &batch.certificates_delete {
            ops.push(TxnOp::delete(k(format!("tls/cert/{name}")), None));
        }
        for cert in &batch.certificates_put {
            let bytes = prost::Message::encode_to_vec(cert.as_ref());
            ops.push(TxnOp::put(
                k(format!("tls/cert/{}", cert.name)),
                bytes,
                None,
            ));
        }
        for token in &batch.challenges_delete {
            ops.push(TxnOp::delete(k(format!("tls/challenge/{token}")), None));
        }
        for c in &batch.challenges_put {
            let answer = c.key_authorization.clone();
            ops.push(TxnOp::put(
                k(format!("tls/challenge/{}", c.token)),
                answer,
                None,
            ));
        }
        if let Some(account) = &batch.acme_account {
            ops.push(TxnOp::put(
                k("tls/acme/account".into()),
                account.clone(),
                None,
            ));
        }
        let version_key = k("meta/version".into());
        let txn = Txn::new()
            .when([Compare::value(
                version_key.clone(),
                CompareOp::Equal,
                expected.to_string(),
            )])
            .and_then(ops)
            .or_else([TxnOp::get(version_key, None)]);
        let mut client = self.client.clone();
        let response = self.run(async move { client.txn(txn).await })?;
        if !response.succeeded() {
            let found = response
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    etcd_client::TxnOpResponse::Get(g) => {
                        g.kvs().first().and_then(|kv| number(kv.value()))
                    }
                    _ => None,
                })
                .unwrap_or(0);
            return Err(StoreError::Conflict { expected, found });
        }
        if let Some(v) = batch.version {
            *version = v;
        }
        Ok(())
    }
}
