//! Durable state of the control plane behind a small trait: sessions with
//! their active configuration, the configuration version, the route-id
//! reservation, the members of the data-plane fleet, and the certificates
//! (with their keys), ACME challenges and ACME account. The default is redb,
//! an embedded ACID store: one file, no server, crash-safe commits; `etcd/`
//! keeps the same records in etcd (see docs/DURABILITY.md).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

mod etcd;
mod records;
pub mod state_file;

pub use etcd::{EtcdStore, EtcdTls};
pub use records::{MemberRecord, ReplicaRecord, RouteRecord, SessionRecord, TargetRecord};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const FLEET: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet");
/// "cert/<name>" (an encoded portico.v1 Certificate), "challenge/<token>"
/// (its key authorization) and "acme/account" (the account's credentials).
const TLS: TableDefinition<&str, &[u8]> = TableDefinition::new("tls");
const ACME_ACCOUNT: &str = "acme/account";
/// Bumped when the layout of what is stored changes incompatibly.
const FORMAT: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("the state store {path} has format {found}, this build reads format {FORMAT}; start with --reset-state to discard it")]
    Format { path: PathBuf, found: u64 },
    #[error("the state store {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("writing the state store {path} failed: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("the etcd state store at {endpoints}: {reason}")]
    Etcd { endpoints: String, reason: String },
    #[error(
        "the etcd state store under {prefix} has format {found}, this build reads format {FORMAT}"
    )]
    EtcdFormat { prefix: String, found: u64 },
    /// Another replica committed `found` first; taken in, the commit is retried.
    #[error("the etcd state store moved to version {found} while this replica held {expected}")]
    Conflict { expected: u64, found: u64 },
    #[error("the configuration in memory diverged from the state store")]
    Diverged,
    /// Another replica took the session over since this one last wrote it:
    /// nothing was written (the actor here is let go once the watch shows it).
    #[error("the session moved to another replica")]
    Moved,
    #[error("the etcd state store under {prefix} is unreadable: {reason}")]
    EtcdCorrupt { prefix: String, reason: String },
}

/// Everything the control plane restores at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub version: u64,
    pub route_reserved: u64,
    pub sessions: Vec<SessionRecord>,
    pub fleet: Vec<MemberRecord>,
    pub certificates: Vec<portico_proto::v1::Certificate>,
    /// (token, key authorization).
    pub challenges: Vec<(String, String)>,
    pub acme_account: Option<Vec<u8>>,
}

/// One atomic change: session records to write and to delete, and the
/// version and route reservation after it.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub version: Option<u64>,
    pub route_reserved: Option<u64>,
    pub put: Vec<SessionRecord>,
    pub delete: Vec<String>,
    pub fleet_put: Vec<MemberRecord>,
    pub fleet_delete: Vec<String>,
    pub certificates_put: Vec<std::sync::Arc<portico_proto::v1::Certificate>>,
    pub certificates_delete: Vec<String>,
    pub challenges_put: Vec<portico_proto::v1::AcmeChallenge>,
    pub challenges_delete: Vec<String>,
    pub acme_account: Option<Vec<u8>>,
}

/// What a caller hears when its change could not be made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailed {
    /// The cause went to `Fatal`: the control plane stops.
    #[error("internal error: the state store cannot be written")]
    Failed,
    /// The shared store did not answer; nothing changed, try again later.
    #[error("store unavailable")]
    Unavailable,
    /// Another replica runs the session now; nothing changed.
    #[error("the session moved to another replica; try again")]
    Moved,
}

/// Tells `main` that the store cannot be written: answering `OK` without
/// durability would break the control plane's promise, so it stops (data
/// planes keep serving meanwhile). `main` decides how the process ends.
#[derive(Clone)]
pub struct Fatal(tokio::sync::mpsc::UnboundedSender<StoreError>);

impl Fatal {
    pub fn channel() -> (Fatal, tokio::sync::mpsc::UnboundedReceiver<StoreError>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Fatal(tx), rx)
    }

    pub fn raise(&self, error: StoreError) {
        tracing::error!(%error, "the state store cannot be written; stopping");
        let _ = self.0.send(error);
    }
}

pub trait Store: Send + Sync {
    fn load(&self) -> Result<Loaded, StoreError>;
    /// Returns once the batch is durable. A batch with a version commits
    /// only on top of the version this process last read or wrote (a
    /// shared store answers `Conflict` otherwise).
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Reserves `count` route ids, none below `at_least` and none ever
    /// reserved before (by any writer): the first of them.
    fn reserve_routes(&self, at_least: u64, count: u64) -> Result<u64, StoreError> {
        self.commit(&Batch {
            route_reserved: Some(at_least + count - 1),
            ..Default::default()
        })?;
        Ok(at_least)
    }
    /// This process took in `version`, written by another one.
    fn observed(&self, _version: u64) {}
    /// For a store shared by replicas: every later write (by any of them),
    /// from the last `load` on.
    fn follow(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Observed>> {
        None
    }
    /// This replica's id in a shared store; empty for one control plane.
    fn replica_id(&self) -> &str {
        ""
    }
    /// Shared store: keeps this replica's record while it lives.
    fn announce(&self, _replica: ReplicaRecord) {}
    /// The live replicas (just this one for a store of its own).
    fn replicas(&self) -> Result<Vec<ReplicaRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// Shared store: the record of a data plane whose stream this replica
    /// holds, for the other replicas, written in the background (`take`:
    /// its stream just opened here).
    fn share_member(&self, _record: MemberRecord, _take: bool) {}
    /// Shared store: a data plane this replica held left.
    fn unshare_member(&self, _node_id: &str) {}
    /// Shared store: makes this replica the one running session `id`,
    /// whichever ran it before (a `RECONNECT` here), or only if replica
    /// `from` still runs it; its record, `None` when there is no such
    /// session (or another replica runs it).
    fn claim_session(
        &self,
        _id: &str,
        _from: Option<&str>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(None)
    }
    /// Shared store: the replica running session `id` as stored (`None`
    /// when it has no record).
    fn session_replica(&self, _id: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Shared store: takes over the sessions whose replica is not live
    /// (it died, or stopped), each by exactly one replica, and `at_start`
    /// those of an earlier run of this replica (same `--replica-id`); their
    /// records.
    fn claim_orphans(&self, _at_start: bool) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// Shared store: this replica stops; what lives only as long as it
    /// (its record, its data planes' records) goes now.
    fn close(&self) {}
    /// Whether this replica holds `role`, which one replica at a time holds
    /// while it lives (the first call campaigns for it). Always, for a
    /// store of one's own.
    fn holds(&self, _role: &str) -> bool {
        true
    }
    /// Shared store: the ACME account as stored now (another replica may
    /// have made it). `None` where the account loaded at start is current.
    fn acme_account(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
}

/// A write to a shared store, as a replica watching it sees it.
#[derive(Debug)]
pub enum Observed {
    /// One write, as its writer's batch (a new version when it has one).
    Write(Box<Batch>),
    /// Writes may have been missed: read the whole state again.
    Missed,
    /// A replica is gone (stopped, or its lease ran out).
    ReplicaGone(String),
}

impl StoreError {
    /// The store did not answer (or failed to): the change was not made,
    /// and a later one may succeed. Anything else stops the control plane.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Etcd { .. })
    }
}

pub struct RedbStore {
    db: Database,
    path: PathBuf,
    /// Commits are flushed to disk before they return (the default).
    fsync: bool,
}

impl RedbStore {
    pub const FILE: &'static str = "state.redb";

    /// Opens (or creates) the store in `dir`; refuses a file it cannot read.
    pub fn open(dir: &Path, fsync: bool) -> Result<RedbStore, StoreError> {
        let path = dir.join(Self::FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = RedbStore { db, path, fsync };
        store.init()?;
        Ok(store)
    }

    fn corrupt(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn write_err(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Stamps a new store with the format; checks an existing one.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.corrupt(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.corrupt(e))?;
            let found = meta
                .get("format")
                .map_err(|e| self.corrupt(e))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", FORMAT).map_err(|e| self.corrupt(e))?;
                }
                Some(FORMAT) => {}
                Some(found) => {
                    return Err(StoreError::Format {
                        path: self.path.clone(),
                        found,
                    })
                }
            }
            txn.open_table(SESSIONS).map_err(|e| self.corrupt(e))?;
            txn.open_table(FLEET).map_err(|e| self.corrupt(e))?;
            txn.open_table(TLS).map_err(|e| self.corrupt(e))?;
        }
        txn.commit().map_err(|e| self.corrupt(e))
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let meta = txn.open_table(META).map_err(|e| self.corrupt(e))?;
        let get = |key: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(key)
                .map_err(|e| self.corrupt(e))?
                .map_or(0, |v| v.value()))
        };
        let mut loaded = Loaded {
            version: get("version")?,
            route_reserved: get("route_reserved")?,
            ..Default::default()
        };
        let sessions = txn.open_table(SESSIONS).map_err(|e| self.corrupt(e))?;
        for entry in sessions.iter().map_err(|e| self.corrupt(e))? {
            let (key, value) = entry.map_err(|e| self.corrupt(e))?;
            let record: SessionRecord = serde_json::from_slice(value.value())
                .map_err(|e| self.corrupt(format!("session {}: {e}", key.value())))?;
            loaded.sessions.push(record);
        }
        let fleet = txn.open_table(FLEET).map_err(|e| self.corrupt(e))?;
        for entry in fleet.iter().map_err(|e| self.corrupt(e))? {
            let (key, value) = entry.map_err(|e| self.corrupt(e))?;
            let record: MemberRecord = serde_json::from_slice(value.value())
                .map_err(|e| self.corrupt(format!("data plane {}: {e}", key.value())))?;
            loaded.fleet.push(record);
        }
        let tls = txn.open_table(TLS).map_err(|e| self.corrupt(e))?;
        for entry in tls.iter().map_err(|e| self.corrupt(e))? {
            let (key, value) = entry.map_err(|e| self.corrupt(e))?;
            let (key, value) = (key.value(), value.value());
            if let Some(name) = key.strip_prefix("cert/") {
                let cert = <portico_proto::v1::Certificate as prost::Message>::decode(value)
                    .map_err(|e| self.corrupt(format!("certificate {name}: {e}")))?;
                loaded.certificates.push(cert);
            } else if let Some(token) = key.strip_prefix("challenge/") {
                let answer = String::from_utf8(value.to_vec())
                    .map_err(|e| self.corrupt(format!("challenge {token}: {e}")))?;
                loaded.challenges.push((token.to_string(), answer));
            } else if key == ACME_ACCOUNT {
                loaded.acme_account = Some(value.to_vec());
            }
        }
        Ok(loaded)
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.write_err(e))?;
        if !self.fsync {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| self.write_err(e))?;
        }
        {
            let mut meta = txn.open_table(META).map_err(|e| self.write_err(e))?;
            if let Some(v) = batch.version {
                meta.insert("version", v).map_err(|e| self.write_err(e))?;
            }
            if let Some(r) = batch.route_reserved {
                meta.insert("route_reserved", r)
                    .map_err(|e| self.write_err(e))?;
            }
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| self.write_err(e))?;
            for id in &batch.delete {
                sessions
                    .remove(id.as_str())
                    .map_err(|e| self.write_err(e))?;
            }
            for record in &batch.put {
                let bytes = serde_json::to_vec(record).map_err(|e| self.write_err(e))?;
                sessions
                    .insert(record.id.as_str(), bytes.as_slice())
                    .map_err(|e| self.write_err(e))?;
            }
            let mut fleet = txn.open_table(FLEET).map_err(|e| self.write_err(e))?;
            for node in &batch.fleet_delete {
                fleet.remove(node.as_str()).map_err(|e| self.write_err(e))?;
            }
            for member in &batch.fleet_put {
                let bytes = serde_json::to_vec(member).map_err(|e| self.write_err(e))?;
                fleet
                    .insert(member.node_id.as_str(), bytes.as_slice())
                    .map_err(|e| self.write_err(e))?;
            }
            let mut tls = txn.open_table(TLS).map_err(|e| self.write_err(e))?;
            let removed = batch
                .certificates_delete
                .iter()
                .map(|n| format!("cert/{n}"))
                .chain(
                    batch
                        .challenges_delete
                        .iter()
                        .map(|t| format!("challenge/{t}")),
                );
            for key in removed {
                tls.remove(key.as_str()).map_err(|e| self.write_err(e))?;
            }
            let put = batch
                .certificates_put
                .iter()
                .map(|c| {
                    (
                        format!("cert/{}", c.name),
                        prost::Message::encode_to_vec(c.as_ref()),
                    )
                })
                .chain(batch.challenges_put.iter().map(|c| {
                    let answer = c.key_authorization.as_bytes().to_vec();
                    (format!("challenge/{}", c.token), answer)
                }))
                .chain(
                    batch
                        .acme_account
                        .iter()
                        .map(|a| (ACME_ACCOUNT.to_string(), a.clone())),
                );
            for (key, value) in put {
                tls.insert(key.as_str(), value.as_slice())
                    .map_err(|e| self.write_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.write_err(e))
    }
}

/// The live replicas as operators see them, `me` among them (and marked)
/// even before it is announced or with a store of its own; read on a
/// blocking thread, as etcd is asked.
pub async fn live_replicas(
    store: std::sync::Arc<dyn Store>,
    me: &ReplicaRecord,
) -> Result<Vec<portico_proto::v1::ReplicaInfo>, String> {
    let mut replicas = tokio::task::spawn_blocking(move || store.replicas())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if !replicas.iter().any(|r| r.id == me.id) {
        replicas.push(me.clone());
    }
    Ok(replicas
        .into_iter()
        .map(|r| portico_proto::v1::ReplicaInfo {
            is_self: r.id == me.id,
            id: r.id,
            registry: r.registry,
            grpc: r.grpc,
            admin: r.admin,
            started_unix_ms: r.started_unix_ms,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_members_survive_a_reopen_and_leave_when_deleted() {
        let dir = std::env::temp_dir().join(format!("portico-store-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let member = MemberRecord {
            node_id: "dp-a".into(),
            address: "127.0.0.1:5000".into(),
            acked_version: 7,
            last_seen_unix_ms: 1_700_000_000_000,
            replica: String::new(),
            state: "connected".into(),
            features: Vec::new(),
        };
        let store = RedbStore::open(&dir, false).unwrap();
        let put = Batch {
            fleet_put: vec![member.clone()],
            ..Default::default()
        };
        store.commit(&put).unwrap();
        drop(store);
        let store = RedbStore::open(&dir, false).unwrap();
        assert_eq!(store.load().unwrap().fleet, vec![member]);
        let delete = Batch {
            fleet_delete: vec!["dp-a".into()],
            ..Default::default()
        };
        store.commit(&delete).unwrap();
        assert!(store.load().unwrap().fleet.is_empty());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
