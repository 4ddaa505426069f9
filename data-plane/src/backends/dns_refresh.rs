//! Keeps every backend name in use looked up, on the health thread: one
//! task per name, each sleeping until its name is due, ending when no table
//! holds the name any more.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::backends::names::Name;
use crate::config::live::Live;

/// Runs for the life of the process.
pub async fn run(live: Arc<Live>) {
    let mut tasks: HashMap<usize, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tasks.retain(|_, t| !t.is_finished());
        for name in live.registry.names.live() {
            // A task holds a `Weak`, so the pointer is not reused while it runs.
            let key = Arc::as_ptr(&name) as usize;
            tasks
                .entry(key)
                .or_insert_with(|| tokio::spawn(follow(live.clone(), Arc::downgrade(&name))));
        }
        tokio::select! {
            _ = live.registry.names.added.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn follow(live: Arc<Live>, name: Weak<Name>) {
    loop {
        let Some(due) = name.upgrade().map(|n| n.due()) else {
            return;
        };
        tokio::time::sleep_until(due.into()).await;
        let Some(n) = name.upgrade() else { return };
        live.dns.refresh(&n).await;
    }
}
