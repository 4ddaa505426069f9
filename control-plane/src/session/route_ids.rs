//! Route ids: never handed out twice, also across restarts and by other
//! replicas, because each block of them is reserved in the store first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::protocol::RouteId;
use crate::store::{Fatal, Store, StoreFailed};

/// Route ids reserved in the store at a time.
const ROUTE_RESERVATION: u64 = 1024;

pub struct RouteIds {
    next: AtomicU64,
    /// Route ids up to this are reserved in the store, so none is ever
    /// reused after a restart, even one that was only staged.
    reserved: Mutex<u64>,
    store: Arc<dyn Store>,
    fatal: Fatal,
}

impl RouteIds {
    pub fn new(reserved: u64, store: Arc<dyn Store>, fatal: Fatal) -> RouteIds {
        RouteIds {
            next: AtomicU64::new(reserved),
            reserved: Mutex::new(reserved),
            store,
            fatal,
        }
    }

    /// The next route id; an error when the store cannot reserve more (the
    /// control plane stops unless the store is only unavailable).
    pub fn allocate(&self) -> Result<RouteId, StoreFailed> {
        let mut reserved = self.reserved.lock();
        let mut id = self.next.load(Ordering::Relaxed) + 1;
        if id > *reserved {
            match self.store.reserve_routes(id, ROUTE_RESERVATION) {
                Ok(first) => {
                    id = first;
                    *reserved = first + ROUTE_RESERVATION - 1;
                }
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "cannot reserve route ids: the state store is unavailable");
                    return Err(StoreFailed::Unavailable);
                }
                Err(e) => {
                    self.fatal.raise(e);
                    return Err(StoreFailed::Failed);
                }
            }
        }
        self.next.store(id, Ordering::Relaxed);
        Ok(RouteId(id))
    }
}
