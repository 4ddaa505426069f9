//! The allocator (mimalloc), and giving memory back after a burst: mimalloc
//! returns freed memory lazily, on later allocations of the thread that
//! freed it, which a worker that goes idle after a burst never makes.

use std::sync::Arc;
use std::time::Duration;

use crate::connections::ConnCounts;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the collector looks.
const EVERY: Duration = Duration::from_secs(2);

/// Connections opened or closed that are worth collecting for (what a
/// burst of them leaves free is a few MB).
const BURST: usize = 256;

/// Starts a thread that, when at least `BURST` client connections opened or
/// closed since it last looked, has mimalloc hand its free memory back. Collecting
/// unconditionally every 2 s cost 3 % of the throughput (the pages it
/// returns are faulted back in under load), and purging on every free 25 %.
pub fn start_collector(connections: Arc<ConnCounts>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("portico-mem".into())
        .spawn(move || loop {
            std::thread::sleep(EVERY);
            if connections.swing() >= BURST {
                // SAFETY: mi_collect only walks mimalloc's own structures.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        })?;
    Ok(())
}
