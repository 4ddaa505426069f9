//! The allocator (mimalloc), and giving memory back after a burst: mimalloc
//! returns freed memory lazily, on later allocations of the thread that
//! freed it, which a worker that goes idle after a burst never makes.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often freed memory is handed back to the system.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts a thread that collects every `COLLECT_EVERY`: a forced collect
/// returns the free memory mimalloc holds, without slowing the request path
/// (purging on every free costs a quarter of the throughput).
pub fn start_collector() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("portico-mem".into())
        .spawn(|| loop {
            std::thread::sleep(COLLECT_EVERY);
            // SAFETY: mi_collect only walks mimalloc's own structures.
            unsafe { libmimalloc_sys::mi_collect(true) };
        })?;
    Ok(())
}
