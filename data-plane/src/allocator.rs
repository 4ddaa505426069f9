//! The allocator (mimalloc), and giving memory back after a burst: mimalloc
//! returns freed memory lazily, on later allocations of the thread that
//! freed it, which a worker that goes idle after a burst never makes.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the collector looks.
const EVERY: Duration = Duration::from_secs(2);

/// Connections opened or closed that are worth collecting for (what a
/// burst of them leaves free is a few MB).
const BURST: usize = 256;

/// Turns transparent huge pages off for this process. A 2 MiB huge page
/// stays resident while any of its 64 KiB mimalloc pages is in use: they
/// cost 13 MB at idle (34 → 21 MB) and kept a burst's memory, for the same
/// throughput. mimalloc is built not to ask for them (feature `no_thp`);
/// this covers kernels that hand them out unasked (THP `always`).
pub fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "transparent huge pages stay on");
    }
}

/// Collections asked of the workers so far.
static DUE: AtomicU64 = AtomicU64::new(0);

/// Starts a thread that asks the workers to collect (see
/// [`ensure_worker_housekeeping`]) when at least `BURST` client connections
/// opened or closed since it last looked (`swing`, called every 2 s), and
/// once more `pool_idle` later, when the backend connections the burst
/// pooled have been closed. Collecting unconditionally every 2 s cost 3 %
/// of the throughput (the pages it returns are faulted back in under load),
/// and purging on every free 25 %.
pub fn start_collector(
    swing: impl Fn() -> usize + Send + 'static,
    pool_idle: Duration,
) -> std::io::Result<()> {
    let ask = || DUE.fetch_add(1, Ordering::AcqRel);
    std::thread::Builder::new()
        .name("portico-mem".into())
        .spawn(move || {
            let mut again: Option<Instant> = None;
            loop {
                std::thread::sleep(EVERY);
                if swing() >= BURST {
                    ask();
                    again = Some(Instant::now() + pool_idle + EVERY);
                } else if again.is_some_and(|at| at <= Instant::now()) {
                    ask();
                    again = None;
                }
            }
        })?;
    Ok(())
}

thread_local! {
    static HOUSEKEEPING: Cell<bool> = const { Cell::new(false) };
}

/// Hands what the calling thread's heap has freed back to the system.
pub fn collect_this_thread() {
    // SAFETY: mi_collect only walks the calling thread's own heap and
    // mimalloc's shared structures (its arenas, which a forced collect also
    // purges).
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Starts, once per proxy worker thread, a task that collects that worker's
/// heap when the collector asks. Only the thread that owns a mimalloc heap
/// can collect it: what a worker freed after a burst (27 → 22 MB after
/// 18,000 connections) otherwise waits for its next allocations. Each
/// worker is its own event loop, so the task stays on its worker.
pub fn ensure_worker_housekeeping() {
    if HOUSEKEEPING.with(|started| started.replace(true)) {
        return;
    }
    tokio::spawn(async {
        let mut seen = DUE.load(Ordering::Acquire);
        loop {
            tokio::time::sleep(EVERY).await;
            let due = DUE.load(Ordering::Acquire);
            if due != seen {
                seen = due;
                collect_this_thread();
            }
        }
    });
}
