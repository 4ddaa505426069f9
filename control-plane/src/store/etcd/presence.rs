//! What a replica keeps in etcd only while it lives: its own record under
//! `replicas/<id>`, the records of the data planes whose streams it holds
//! (`fleet/<node>`) and the roles it holds (`roles/<name>`), all under one
//! lease, so they go when it dies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};
use tokio::sync::mpsc;

use super::keys::read_back;
use crate::store::MemberRecord;

/// The lease's time to live: how long a dead replica's records outlive it.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the lease is kept alive, and failed writes tried again.
const TICK: Duration = Duration::from_secs(1);

pub enum Write {
    /// This replica's own record (JSON).
    Replica(Vec<u8>),
    /// A data plane's record. `take`: its stream just opened here, so the
    /// record is written whoever held it; otherwise only while this
    /// replica still holds it (a plane that moved on is not written back).
    Member { record: MemberRecord, take: bool },
    /// A data plane left: its record goes, if this replica still holds it.
    MemberGone(String),
    /// The replica stops: the lease is revoked, so its records go at once;
    /// told on the sender when done.
    Stop(std::sync::mpsc::Sender<()>),
}

/// Roles one replica at a time holds: name -> whether this one does now.
type Roles = Arc<parking_lot::Mutex<HashMap<String, bool>>>;

/// The writer: one task on the store's runtime, so writes keep their order.
pub struct Presence {
    tx: mpsc::UnboundedSender<Write>,
    roles: Roles,
}

impl Presence {
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        client: Client,
        prefix: String,
        replica: &str,
    ) -> Presence {
        let (tx, rx) = mpsc::unbounded_channel();
        let roles = Roles::default();
        runtime.spawn(Writer::new(client, prefix, replica, roles.clone()).run(rx));
        Presence { tx, roles }
    }

    /// Whether this replica holds `role` now. The first call campaigns for
    /// it: from then on the writer takes it whenever no live replica holds
    /// it (within a tick of the holder's lease ending).
    pub fn holds(&self, role: &str) -> bool {
        *self.roles.lock().entry(role.to_string()).or_insert(false)
    }

    pub fn send(&self, write: Write) {
        let _ = self.tx.send(write);
    }

    /// Revokes the lease, waiting at most `within`.
    pub fn stop(&self, within: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Write::Stop(done)).is_ok() {
            let _ = wait.recv_timeout(within);
        }
    }
}

struct Writer {
    client: Client,
    prefix: String,
    /// This replica's id, the value of the roles it holds.
    replica_id: String,
    replica_key: String,
    roles: Roles,
    /// 0 until granted, and again once lost.
    lease: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    replica: Option<Vec<u8>>,
    replica_written: bool,
    /// node -> the bytes this replica last wrote for it (what it holds).
    held: HashMap<String, Vec<u8>>,
    /// Writes not done yet: node -> (bytes and take, or gone).
    pending: HashMap<String, Option<(Vec<u8>, bool)>>,
}

impl Writer {
    fn new(client: Client, prefix: String, replica: &str, roles: Roles) -> Writer {
        Writer {
            client,
            replica_key: format!("{prefix}/replicas/{replica}"),
            prefix,
            replica_id: replica.to_string(),
            roles,
            lease: 0,
            keeper: None,
            replica: None,
            replica_written: false,
            held: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    fn member_key(&self, node: &str) -> String {
        format!("{}/fleet/{node}", self.prefix)
    }

    fn take(&mut self, write: Write) {
        match write {
            Write::Replica(bytes) => {
                self.replica = Some(bytes);
                self.replica_written = false;
            }
            Write::Member { record, take } => {
                let bytes = serde_json::to_vec(&record).unwrap_or_default();
                let take =
                    take || matches!(self.pending.get(&record.node_id), Some(Some((_, true))));
                self.pending.insert(record.node_id, Some((bytes, take)));
            }
            Write::MemberGone(node) => {
                self.pending.insert(node, None);
            }
            Write::Stop(_) => {}
        }
    }

    async fn revoke(&mut self) {
        if self.lease != 0 {
            let _ = self.client.lease_revoke(self.lease).await;
            self.lease = 0;
        }
        self.lose_roles();
    }

    /// Without a lease nothing is held; the roles are campaigned for again
    /// under the next one.
    fn lose_roles(&self) {
        for (role, held) in self.roles.lock().iter_mut() {
            if std::mem::take(held) {
                tracing::info!(%role, "this replica no longer holds the role");
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Write>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                write = rx.recv() => match write {
                    Some(Write::Stop(done)) => {
                        self.revoke().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(write) => {
                        self.take(write);
                        while let Ok(write) = rx.try_recv() {
                            self.take(write);
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => self.keep_alive().await,
            }
            if self.lease == 0 {
                self.grant().await;
            }
            if self.lease != 0 {
                self.flush().await;
            }
        }
    }

    async fn grant(&mut self) {
        let ttl = LEASE_TTL.as_secs() as i64;
        let lease = match self.client.lease_grant(ttl, None).await {
            Ok(granted) => granted.id(),
            Err(error) => {
                tracing::warn!(%error, "cannot take an etcd lease; trying again");
                return;
            }
        };
        match self.client.lease_keep_alive(lease).await {
            Ok(keeper) => self.keeper = Some(keeper),
            Err(error) => {
                tracing::warn!(%error, "cannot keep the etcd lease alive; trying again");
                return;
            }
        }
        // Everything it held went with the last lease: written again.
        self.lease = lease;
        self.replica_written = false;
        for (node, bytes) in std::mem::take(&mut self.held) {
            self.pending.entry(node).or_insert(Some((bytes, true)));
        }
    }

    /// Any trouble keeping the lease means a new one: the records are
    /// written again under it, and the old one expires with nothing on it.
    async fn keep_alive(&mut self) {
        let Some((keeper, answers)) = self.keeper.as_mut() else {
            return;
        };
        let alive = match keeper.keep_alive().await {
            Ok(()) => matches!(
                tokio::time::timeout(TICK, answers.message()).await,
                Ok(Ok(Some(r))) if r.ttl() > 0
            ),
            Err(_) => false,
        };
        if !alive {
            tracing::warn!(
                lease = self.lease,
                "the etcd lease was lost; taking a new one"
            );
            self.lease = 0;
            self.keeper = None;
            self.lose_roles();
        }
    }

    /// Takes each role no one holds; keeps knowing which ones are this
    /// replica's (written under its lease, or under an earlier one of the
    /// same id that has not run out yet).
    async fn campaign(&mut self, lease: &Option<PutOptions>) {
        let names: Vec<String> = self.roles.lock().keys().cloned().collect();
        for role in names {
            let key = format!("{}/roles/{role}", self.prefix);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    self.replica_id.clone(),
                    lease.clone(),
                )])
                .or_else([TxnOp::get(key, None)]);
            let held = match self.client.txn(txn).await {
                Ok(r) if r.succeeded() => true,
                Ok(r) => read_back(r).is_some_and(|holder| holder == self.replica_id.as_bytes()),
                // Not knowing counts as not holding: never two holders.
                Err(error) => {
                    tracing::warn!(%error, %role, "cannot campaign for a role in etcd; trying again");
                    false
                }
            };
            if let Some(was) = self.roles.lock().get_mut(&role) {
                if *was != held {
                    tracing::info!(%role, held, "role changed hands");
                }
                *was = held;
            }
        }
    }

    async fn flush(&mut self) {
        let lease = Some(PutOptions::new().with_lease(self.lease));
        if let (false, Some(bytes)) = (self.replica_written, &self.replica) {
            let key = self.replica_key.clone();
            match self.client.put(key, bytes.clone(), lease.clone()).await {
                Ok(_) => self.replica_written = true,
                Err(error) => tracing::warn!(%error, "cannot announce this replica in etcd"),
            }
        }
        for (node, write) in std::mem::take(&mut self.pending) {
            let key = self.member_key(&node);
            let held = self.held.get(&node).cloned();
            let (then, guarded) = match &write {
                Some((bytes, take)) => {
                    (TxnOp::put(key.clone(), bytes.clone(), lease.clone()), !take)
                }
                None => (TxnOp::delete(key.clone(), None), true),
            };
            let txn = match (guarded, &held) {
                (false, _) => Txn::new().and_then([then]),
                (true, Some(bytes)) => Txn::new()
                    .when([Compare::value(key, CompareOp::Equal, bytes.clone())])
                    .and_then([then]),
                // Never written by this replica: nothing of its own to change.
                (true, None) => continue,
            };
            match self.client.txn(txn).await {
                Ok(r) if r.succeeded() => match write {
                    Some((bytes, _)) => {
                        self.held.insert(node, bytes);
                    }
                    None => {
                        self.held.remove(&node);
                    }
                },
                // Another replica holds it now.
                Ok(_) => {
                    self.held.remove(&node);
                }
                Err(error) => {
                    tracing::warn!(%error, %node, "cannot write a data plane's record to etcd; trying again");
                    self.pending.entry(node).or_insert(write);
                }
            }
        }
        self.campaign(&lease).await;
    }
}
