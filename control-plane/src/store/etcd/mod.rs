//! The state kept in etcd (`--store etcd`): the same records as the embedded
//! store, under one key prefix, each batch one transaction conditioned on
//! the version this control plane last saw, so a writer it does not know of
//! can never be overwritten silently.

pub(super) mod keys;
mod presence;
mod tls;

use std::sync::atomic::AtomicI64;
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};

use super::{
    Batch, Loaded, MemberRecord, Observed, ReplicaRecord, SessionRecord, Store, StoreError, FORMAT,
};
use keys::{number, read_back, Record};
use presence::{Presence, Write};
pub use tls::EtcdTls;

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
    /// The etcd revision at which this replica last wrote (or claimed) each
    /// session it runs: its writes of that session are conditioned on it,
    /// so an actor a move left behind cannot overwrite the new holder's.
    held: parking_lot::Mutex<std::collections::HashMap<String, i64>>,
}

fn key(prefix: &str, rest: &str) -> String {
    format!("{prefix}/{rest}")
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
            held: Default::default(),
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

    /// One transaction.
    fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        let mut client = self.client.clone();
        self.run(async move { client.txn(txn).await })
    }

    /// The key `rest` under the prefix.
    fn get_one(&self, rest: &str) -> Result<etcd_client::GetResponse, StoreError> {
        self.get(rest, None)
    }

    /// Every key under the prefix that begins with `rest`.
    fn get_all(&self, rest: &str) -> Result<etcd_client::GetResponse, StoreError> {
        self.get(rest, Some(GetOptions::new().with_prefix()))
    }

    fn get(
        &self,
        rest: &str,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        let (mut client, key) = (self.client.clone(), key(&self.prefix, rest));
        self.run(async move { client.get(key, options).await })
    }

    fn init(&self) -> Result<(), StoreError> {
        let format = key(&self.prefix, "meta/format");
        let version = key(&self.prefix, "meta/version");
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
        let response = self.txn(txn)?;
        if response.succeeded() {
            return Ok(());
        }
        match read_back(response).as_deref().and_then(number) {
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
    /// Conditions for writing the sessions of `batch` this replica holds:
    /// each still as this replica last wrote it.
    fn held_guards(&self, batch: &Batch) -> Vec<Compare> {
        let held = self.held.lock();
        let ids = batch.put.iter().map(|r| &r.id).chain(batch.delete.iter());
        ids.filter_map(|id| {
            let revision = *held.get(id)?;
            let key = key(&self.prefix, &format!("sessions/{id}"));
            Some(Compare::mod_revision(key, CompareOp::Equal, revision))
        })
        .collect()
    }

    /// Remembers the revision of the sessions `batch` wrote.
    fn wrote(&self, batch: &Batch, response: &etcd_client::TxnResponse) {
        let Some(revision) = response.header().map(|h| h.revision()) else {
            return;
        };
        let mut held = self.held.lock();
        for record in &batch.put {
            held.insert(record.id.clone(), revision);
        }
        for id in &batch.delete {
            held.remove(id);
        }
    }

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
            let response = self.txn(txn)?;
            if response.succeeded() {
                if let Some(header) = response.header() {
                    self.held
                        .lock()
                        .insert(record.id.clone(), header.revision());
                }
                claimed.push(record);
            }
        }
        Ok(claimed)
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        // Held while reading, so no commit of this process moves the
        // version between the read and its record.
        let mut version = self.version.lock();
        let response = self.get_all("")?;
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
        let ops: Vec<TxnOp> = keys::writes(batch)
            .map_err(|e| self.failed(e))?
            .into_iter()
            .map(|(rest, value)| match value {
                Some(value) => TxnOp::put(key(&self.prefix, &rest), value, None),
                None => TxnOp::delete(key(&self.prefix, &rest), None),
            })
            .collect();
        let held = self.held_guards(batch);
        let Some(next) = batch.version else {
            // Records beside the versions (a new session, the fleet, route
            // ids) have one writer each: a session's, the replica holding it.
            let response = self.txn(Txn::new().when(held).and_then(ops))?;
            if !response.succeeded() {
                return Err(StoreError::Moved);
            }
            self.wrote(batch, &response);
            return Ok(());
        };
        // Held across the transaction: this process's commits go one at a
        // time, each on top of the version the last one (or a read) left.
        let mut version = self.version.lock();
        let expected = *version;
        let version_key = key(&self.prefix, "meta/version");
        let mut when = vec![Compare::value(
            version_key.clone(),
            CompareOp::Equal,
            expected.to_string(),
        )];
        when.extend(held);
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else([TxnOp::get(version_key, None)]);
        let response = self.txn(txn)?;
        if !response.succeeded() {
            let found = read_back(response).as_deref().and_then(number).unwrap_or(0);
            if found == expected {
                return Err(StoreError::Moved);
            }
            return Err(StoreError::Conflict { expected, found });
        }
        self.wrote(batch, &response);
        *version = next;
        Ok(())
    }

    fn reserve_routes(&self, at_least: u64, count: u64) -> Result<u64, StoreError> {
        let key = key(&self.prefix, "meta/route_reserved");
        for _ in 0..RESERVE_ATTEMPTS {
            let response = self.get_one("meta/route_reserved")?;
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
            if self.txn(txn)?.succeeded() {
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
        let response = self.get_all("replicas/")?;
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

    fn claim_session(
        &self,
        id: &str,
        from: Option<&str>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let response = self.get_one(&format!("sessions/{id}"))?;
        let claimed = self.claim(response.kvs(), |r| {
            from.is_none_or(|from| r.replica == from)
        })?;
        Ok(claimed.into_iter().next())
    }

    fn session_replica(&self, id: &str) -> Result<Option<String>, StoreError> {
        let response = self.get_one(&format!("sessions/{id}"))?;
        Ok(response.kvs().first().map(|kv| {
            serde_json::from_slice::<SessionRecord>(kv.value())
                .map(|r| r.replica)
                .unwrap_or_default()
        }))
    }

    fn claim_orphans(&self, at_start: bool) -> Result<Vec<SessionRecord>, StoreError> {
        let live: std::collections::HashSet<String> =
            self.replicas()?.into_iter().map(|r| r.id).collect();
        let response = self.get_all("sessions/")?;
        self.claim(response.kvs(), |r| {
            if crate::session::key::is_site(&r.id) {
                // Sites run on every replica: no one claims them.
                false
            } else if r.replica == self.replica {
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

    fn holds(&self, role: &str) -> bool {
        self.presence.as_ref().is_some_and(|p| p.holds(role))
    }

    fn acme_account(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.get_one(keys::ACME_ACCOUNT)?;
        Ok(got.kvs().first().map(|kv| kv.value().to_vec()))
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
