//! The state kept in etcd (`--store etcd`): the same records as the embedded
//! store, under one key prefix, each batch one transaction conditioned on
//! the version this control plane last saw, so a writer it does not know of
//! can never be overwritten silently.

use std::sync::mpsc;
use std::time::Duration;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};
use portico_proto::v1;

use super::presence::{Presence, Write};
use super::{
    Batch, Loaded, MemberRecord, Observed, ReplicaRecord, SessionRecord, Store, StoreError, FORMAT,
};

/// How long one etcd call may take before the store counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a broken watch is opened again.
const WATCH_RETRY: Duration = Duration::from_millis(200);
/// Route-id reservations tried before giving up on a busy counter.
const RESERVE_ATTEMPTS: usize = 64;

pub struct EtcdStore {
    endpoints: String,
    prefix: String,
    client: Client,
    /// etcd's client is async; the store's callers are not (the committer
    /// holds the configuration's lock across a commit, as it does an
    /// fsync), so calls run on a runtime of the store's own. Taken on drop.
    runtime: Option<tokio::runtime::Runtime>,
    /// The version this replica last read, wrote or took in.
    version: parking_lot::Mutex<u64>,
    /// The etcd revision of the last full read: watching starts after it.
    revision: AtomicI64,
    replica: String,
    /// What lives only as long as this replica (set once connected).
    presence: Option<Presence>,
}

fn key(prefix: &str, rest: &str) -> String {
    format!("{prefix}/{rest}")
}

/// TLS to etcd (`--etcd-tls-ca`, `--etcd-tls-cert`, `--etcd-tls-key`; https endpoints).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// Trusted for etcd's certificate (else the system's roots).
    pub ca: Option<std::path::PathBuf>,
    /// This replica's client certificate and key, for etcd's
    /// `--client-cert-auth`.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl EtcdTls {
    fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    fn options(&self) -> Result<etcd_client::TlsOptions, String> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))
        };
        let mut tls = etcd_client::TlsOptions::new();
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?)),
            None => tls.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                Ok(tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?)))
            }
            (None, None) => Ok(tls),
            _ => Err("--etcd-tls-cert and --etcd-tls-key go together".into()),
        }
    }
}

impl EtcdStore {
    /// Connects to `endpoints` and stamps (or checks) the format under `prefix`.
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        replica: &str,
        tls: &EtcdTls,
    ) -> Result<EtcdStore, StoreError> {
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
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        if tls.enabled() {
            let tls = tls.options().map_err(|reason| StoreError::Etcd {
                endpoints: joined.clone(),
                reason,
            })?;
            options = options.with_tls(tls);
        }
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
        let presence = Presence::start(&runtime, client.clone(), prefix.clone(), replica);
        let store = EtcdStore {
            endpoints: joined,
            prefix,
            client,
            runtime: Some(runtime),
            version: parking_lot::Mutex::new(0),
            revision: AtomicI64::new(0),
            replica: replica.to_string(),
            presence: Some(presence),
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

/// One stored record, written (`Some` value) or deleted (`None`), in the
/// shape the embedded store keeps it.
enum Record {
    Version(u64),
    RouteReserved(u64),
    Session(String, Option<Box<SessionRecord>>),
    Member(String, Option<MemberRecord>),
    Certificate(String, Option<Arc<v1::Certificate>>),
    Challenge(String, Option<String>),
    AcmeAccount(Vec<u8>),
    /// `replicas/<id>`: only its going matters to the others.
    Replica(String, bool),
}

impl Record {
    /// Reads the record at `rest` (the key under the prefix); `None` for a
    /// key this build does not know.
    fn decode(rest: &str, value: Option<&[u8]>) -> Result<Option<Record>, String> {
        fn bad(what: String, e: &dyn std::fmt::Display) -> String {
            format!("{what}: {e}")
        }
        fn json<T: serde::de::DeserializeOwned>(
            value: Option<&[u8]>,
            what: String,
        ) -> Result<Option<T>, String> {
            value
                .map(|v| serde_json::from_slice(v).map_err(|e| bad(what, &e)))
                .transpose()
        }
        Ok(Some(if rest == "meta/version" {
            Record::Version(value.and_then(number).unwrap_or(0))
        } else if rest == "meta/route_reserved" {
            Record::RouteReserved(value.and_then(number).unwrap_or(0))
        } else if let Some(id) = rest.strip_prefix("sessions/") {
            Record::Session(id.to_string(), json(value, format!("session {id}"))?)
        } else if let Some(node) = rest.strip_prefix("fleet/") {
            Record::Member(node.to_string(), json(value, format!("data plane {node}"))?)
        } else if let Some(name) = rest.strip_prefix("tls/cert/") {
            let cert = value
                .map(|v| {
                    <v1::Certificate as prost::Message>::decode(v)
                        .map_err(|e| bad(format!("certificate {name}"), &e))
                })
                .transpose()?;
            Record::Certificate(name.to_string(), cert.map(Arc::new))
        } else if let Some(token) = rest.strip_prefix("tls/challenge/") {
            let answer = value.map(|v| String::from_utf8_lossy(v).into_owned());
            Record::Challenge(token.to_string(), answer)
        } else if let Some(id) = rest.strip_prefix("replicas/") {
            Record::Replica(id.to_string(), value.is_some())
        } else if rest == "tls/acme/account" {
            match value {
                Some(v) => Record::AcmeAccount(v.to_vec()),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        }))
    }

    /// Adds this write to `batch`, as the writer's batch had it.
    fn into_batch(self, batch: &mut Batch) {
        match self {
            Record::Version(v) => batch.version = Some(v),
            Record::RouteReserved(r) => batch.route_reserved = Some(r),
            Record::Session(_, Some(r)) => batch.put.push(*r),
            Record::Session(id, None) => batch.delete.push(id),
            Record::Member(_, Some(m)) => batch.fleet_put.push(m),
            Record::Member(node, None) => batch.fleet_delete.push(node),
            Record::Certificate(_, Some(c)) => batch.certificates_put.push(c),
            Record::Certificate(name, None) => batch.certificates_delete.push(name),
            Record::Challenge(token, Some(key_authorization)) => {
                batch.challenges_put.push(v1::AcmeChallenge {
                    token,
                    key_authorization,
                })
            }
            Record::Challenge(token, None) => batch.challenges_delete.push(token),
            Record::AcmeAccount(a) => batch.acme_account = Some(a),
            Record::Replica(..) => {}
        }
    }

    fn into_loaded(self, loaded: &mut Loaded) {
        match self {
            Record::Version(v) => loaded.version = v,
            Record::RouteReserved(r) => loaded.route_reserved = r,
            Record::Session(_, Some(r)) => loaded.sessions.push(*r),
            Record::Member(_, Some(m)) => loaded.fleet.push(m),
            Record::Certificate(_, Some(c)) => loaded
                .certificates
                .push(Arc::try_unwrap(c).unwrap_or_else(|c| c.as_ref().clone())),
            Record::Challenge(token, Some(answer)) => loaded.challenges.push((token, answer)),
            Record::AcmeAccount(a) => loaded.acme_account = Some(a),
            Record::Replica(..)
            | Record::Session(_, None)
            | Record::Member(_, None)
            | Record::Certificate(_, None)
            | Record::Challenge(_, None) => {}
        }
    }
}

impl EtcdStore {
    /// The part of `key` under the prefix.
    fn rest<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.prefix)?
            .strip_prefix('/')
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::EtcdCorrupt {
            prefix: self.prefix.clone(),
            reason,
        }
    }

    /// Sends every later write under the prefix to `tx`, one batch per etcd
    /// revision, in order, from `next` on; resumes where it stopped when
    /// the watch breaks, and says `Missed` when etcd compacted what it had
    /// not seen yet.
    async fn watch(
        mut client: Client,
        prefix: String,
        mut next: i64,
        tx: tokio::sync::mpsc::UnboundedSender<Observed>,
    ) {
        let root = format!("{prefix}/");
        while !tx.is_closed() {
            let options = WatchOptions::new().with_prefix().with_start_revision(next);
            let mut stream = match client.watch(root.clone(), Some(options)).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch etcd; trying again");
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            };
            while let Ok(Some(response)) = stream.message().await {
                if response.compact_revision() > 0 {
                    next = response.compact_revision();
                    let _ = tx.send(Observed::Missed);
                    break;
                }
                if response.canceled() {
                    break;
                }
                let mut current: Option<(i64, Batch)> = None;
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let revision = kv.mod_revision();
                    if current.as_ref().is_some_and(|(r, _)| *r != revision) {
                        if let Some((_, batch)) = current.take() {
                            let _ = tx.send(Observed::Write(Box::new(batch)));
                        }
                    }
                    let batch = &mut current
                        .get_or_insert_with(|| (revision, Batch::default()))
                        .1;
                    let value = (event.event_type() == EventType::Put).then(|| kv.value());
                    let rest = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| k.strip_prefix(&root));
                    match rest.map(|r| Record::decode(r, value)) {
                        Some(Ok(Some(Record::Replica(id, false)))) => {
                            let _ = tx.send(Observed::ReplicaGone(id));
                        }
                        Some(Ok(Some(record))) => record.into_batch(batch),
                        Some(Ok(None)) | None => {}
                        Some(Err(reason)) => {
                            tracing::error!(%reason, "a record written to etcd cannot be read");
                            let _ = tx.send(Observed::Missed);
                        }
                    }
                    next = revision + 1;
                }
                if let Some((_, batch)) = current {
                    let _ = tx.send(Observed::Write(Box::new(batch)));
                }
            }
            tokio::time::sleep(WATCH_RETRY).await;
        }
    }
}

impl EtcdStore {
    /// Makes this replica the one running each session of `kvs` that
    /// `pick` accepts, each by a compare-and-swap on its record, so that of
    /// replicas claiming at once exactly one wins; the records it won.
    fn claim(
        &self,
        kvs: &[etcd_client::KeyValue],
        pick: impl Fn(&SessionRecord) -> bool,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut claimed = Vec::new();
        for kv in kvs {
            let Ok(mut record) = serde_json::from_slice::<SessionRecord>(kv.value()) else {
                continue;
            };
            if !pick(&record) {
                continue;
            }
            record.replica = self.replica.clone();
            let bytes = serde_json::to_vec(&record).map_err(|e| self.failed(e))?;
            let key = kv.key().to_vec();
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(key, bytes, None)]);
            let mut client = self.client.clone();
            if self.run(async move { client.txn(txn).await })?.succeeded() {
                claimed.push(record);
            }
        }
        Ok(claimed)
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let mut client = self.client.clone();
        let prefix = format!("{}/", self.prefix);
        // Held while reading, so no commit of this process moves the
        // version between the read and its record.
        let mut version = self.version.lock();
        let response = self.run(async move {
            client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
        })?;
        let mut loaded = Loaded::default();
        for kv in response.kvs() {
            let Some(rest) = self.rest(kv.key()) else {
                continue;
            };
            if let Some(record) =
                Record::decode(rest, Some(kv.value())).map_err(|r| self.corrupt(r))?
            {
                record.into_loaded(&mut loaded);
            }
        }
        *version = loaded.version;
        if let Some(header) = response.header() {
            self.revision
                .store(header.revision(), std::sync::atomic::Ordering::Release);
        }
        Ok(loaded)
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let k = |rest: String| key(&self.prefix, &rest);
        let mut ops = Vec::new();
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
        let mut client = self.client.clone();
        let Some(next) = batch.version else {
            // Records beside the versions (a new session, the fleet, route
            // ids) never conflict: each has one writer.
            let txn = Txn::new().and_then(ops);
            self.run(async move { client.txn(txn).await })?;
            return Ok(());
        };
        // Held across the transaction: this process's commits go one at a
        // time, each on top of the version the last one (or a read) left.
        let mut version = self.version.lock();
        let expected = *version;
        let version_key = k("meta/version".into());
        let txn = Txn::new()
            .when([Compare::value(
                version_key.clone(),
                CompareOp::Equal,
                expected.to_string(),
            )])
            .and_then(ops)
            .or_else([TxnOp::get(version_key, None)]);
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
        *version = next;
        Ok(())
    }

    fn reserve_routes(&self, at_least: u64, count: u64) -> Result<u64, StoreError> {
        let key = key(&self.prefix, "meta/route_reserved");
        for _ in 0..RESERVE_ATTEMPTS {
            let (mut client, get) = (self.client.clone(), key.clone());
            let response = self.run(async move { client.get(get, None).await })?;
            let (reserved, revision) = response.kvs().first().map_or((0, 0), |kv| {
                (number(kv.value()).unwrap_or(0), kv.mod_revision())
            });
            let first = at_least.max(reserved + 1);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::put(
                    key.clone(),
                    (first + count - 1).to_string(),
                    None,
                )]);
            let mut client = self.client.clone();
            if self.run(async move { client.txn(txn).await })?.succeeded() {
                return Ok(first);
            }
        }
        Err(self.failed("route ids: every reservation lost to another replica's"))
    }

    fn observed(&self, version: u64) {
        let mut held = self.version.lock();
        *held = (*held).max(version);
    }

    fn replica_id(&self) -> &str {
        &self.replica
    }

    fn announce(&self, replica: ReplicaRecord) {
        if let (Some(presence), Ok(bytes)) = (&self.presence, serde_json::to_vec(&replica)) {
            presence.send(Write::Replica(bytes));
        }
    }

    fn replicas(&self) -> Result<Vec<ReplicaRecord>, StoreError> {
        let mut client = self.client.clone();
        let prefix = key(&self.prefix, "replicas/");
        let response = self.run(async move {
            client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
        })?;
        let mut replicas: Vec<ReplicaRecord> = response
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        replicas.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(replicas)
    }

    fn share_member(&self, mut record: MemberRecord, take: bool) {
        record.replica = self.replica.clone();
        if let Some(presence) = &self.presence {
            presence.send(Write::Member { record, take });
        }
    }

    fn claim_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let key = key(&self.prefix, &format!("sessions/{id}"));
        let (mut client, get) = (self.client.clone(), key.clone());
        let response = self.run(async move { client.get(get, None).await })?;
        Ok(self.claim(response.kvs(), |_| true)?.into_iter().next())
    }

    fn session_replica(&self, id: &str) -> Result<Option<String>, StoreError> {
        let key = key(&self.prefix, &format!("sessions/{id}"));
        let mut client = self.client.clone();
        let response = self.run(async move { client.get(key, None).await })?;
        Ok(response.kvs().first().map(|kv| {
            serde_json::from_slice::<SessionRecord>(kv.value())
                .map(|r| r.replica)
                .unwrap_or_default()
        }))
    }

    fn claim_orphans(&self, at_start: bool) -> Result<Vec<SessionRecord>, StoreError> {
        let live: std::collections::HashSet<String> =
            self.replicas()?.into_iter().map(|r| r.id).collect();
        let mut client = self.client.clone();
        let prefix = key(&self.prefix, "sessions/");
        let response = self.run(async move {
            client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
        })?;
        self.claim(response.kvs(), |r| {
            if r.replica == self.replica {
                // Ours from a run before this one (a stable id restarted).
                at_start
            } else {
                !live.contains(&r.replica)
            }
        })
    }

    fn close(&self) {
        if let Some(presence) = &self.presence {
            presence.stop(CALL_TIMEOUT);
        }
    }

    fn unshare_member(&self, node_id: &str) {
        if let Some(presence) = &self.presence {
            presence.send(Write::MemberGone(node_id.to_string()));
        }
    }

    fn follow(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Observed>> {
        let runtime = self.runtime.as_ref()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let next = self.revision.load(std::sync::atomic::Ordering::Acquire) + 1;
        runtime.spawn(Self::watch(
            self.client.clone(),
            self.prefix.clone(),
            next,
            tx,
        ));
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": id, "service": "web", "instance": "web-1", "maintenance_port": 0,
            "metadata": {}, "peer_ip": null, "connected_at_ms": 1, "last_apply_ms": null,
            "routes": [], "headers": [], "options": [], "health": [], "ratelimit": [],
            "breaker": [], "maintenance": [], "maintenance_backend": null, "drain": null,
            "replica": "r1",
        }))
        .unwrap()
    }

    #[test]
    fn a_watched_revision_comes_back_as_the_batch_its_writer_committed() {
        let member = serde_json::to_vec(&MemberRecord {
            node_id: "dp".into(),
            address: "a".into(),
            acked_version: 7,
            last_seen_unix_ms: 1,
            replica: "r1".into(),
            state: "connected".into(),
        })
        .unwrap();
        let cert = prost::Message::encode_to_vec(&v1::Certificate {
            name: "file:a".into(),
            ..Default::default()
        });
        let s1 = session("s1");
        let writes: [(&str, Option<&[u8]>); 10] = [
            ("meta/version", Some(b"7")),
            ("meta/route_reserved", Some(b"2048")),
            ("sessions/s1", Some(&s1)),
            ("sessions/s2", None),
            ("fleet/dp", Some(&member)),
            ("tls/cert/file:a", Some(&cert)),
            ("tls/challenge/t", Some(b"t.k")),
            ("tls/challenge/u", None),
            ("replicas/r2", None),
            ("something/else", Some(b"?")),
        ];
        let mut batch = Batch::default();
        let mut gone = Vec::new();
        for (key, value) in writes {
            match Record::decode(key, value).unwrap() {
                Some(Record::Replica(id, false)) => gone.push(id),
                Some(record) => record.into_batch(&mut batch),
                None => assert_eq!(key, "something/else"),
            }
        }
        assert_eq!((batch.version, batch.route_reserved), (Some(7), Some(2048)));
        assert_eq!(
            (batch.put[0].id.as_str(), batch.put[0].replica.as_str()),
            ("s1", "r1")
        );
        assert_eq!(batch.delete, ["s2"]);
        assert_eq!(batch.fleet_put[0].acked_version, 7);
        assert_eq!(batch.certificates_put[0].name, "file:a");
        assert_eq!(batch.challenges_put[0].key_authorization, "t.k");
        assert_eq!(batch.challenges_delete, ["u"]);
        assert_eq!(gone, ["r2"]);
    }

    #[test]
    fn an_unreadable_record_is_an_error_that_names_it() {
        let err = Record::decode("sessions/s9", Some(b"{not json"))
            .err()
            .unwrap();
        assert!(err.starts_with("session s9: "), "{err}");
        let err = Record::decode("tls/cert/x", Some(b"\xff\xff"))
            .err()
            .unwrap();
        assert!(err.starts_with("certificate x: "), "{err}");
    }
}
