//! The access log (`--access-log PATH|-`): one JSON object per request,
//! serialized straight into a bounded in-memory batch that a writer thread
//! takes every 50 ms. A full batch drops the line and counts it; a request
//! never waits. SIGHUP reopens the file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tracing::warn;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    pub fn parse(raw: &str) -> Target {
        match raw {
            "-" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }
    }
}

/// Lines serialized since the writer last took them.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: usize,
}

pub struct AccessLog {
    batch: Mutex<Batch>,
    /// Lines a batch holds at most.
    capacity: usize,
    dropped: AtomicU64,
    reopen: AtomicBool,
}

impl AccessLog {
    /// Starts the writer thread; the file is opened (and created) there, so
    /// a slow file system never holds up the caller. The thread ends when
    /// the log is dropped.
    pub fn start(target: Target, capacity: usize) -> std::io::Result<Arc<AccessLog>> {
        let log = Arc::new(AccessLog::new(capacity));
        let weak = Arc::downgrade(&log);
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || write_lines(target, weak))?;
        Ok(log)
    }

    fn new(capacity: usize) -> AccessLog {
        AccessLog {
            batch: Mutex::new(Batch::default()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
        }
    }

    /// Appends `line` as one JSON object and a newline; drops and counts it
    /// when the batch is full. Serializing into the shared batch (instead of
    /// a `String` per line sent through a channel) spares the request path an
    /// allocation and the writer a free per line.
    pub fn write(&self, line: &impl Serialize) {
        let mut batch = self.batch.lock();
        if batch.lines >= self.capacity {
            drop(batch);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = batch.bytes.len();
        if serde_json::to_writer(&mut batch.bytes, line).is_err() {
            // Plain fields cannot fail; whatever was written is taken back.
            batch.bytes.truncate(start);
            return;
        }
        batch.bytes.push(b'\n');
        batch.lines += 1;
    }

    /// The file is reopened before the next batch (for logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Swaps the batch for `spare` (emptied, its allocation kept), so the
    /// lock is held for a pointer swap and both buffers are reused.
    fn take(&self, spare: &mut Vec<u8>) {
        spare.clear();
        let mut batch = self.batch.lock();
        std::mem::swap(&mut batch.bytes, spare);
        batch.lines = 0;
    }
}

type Out = Box<dyn Write + Send>;

fn open(target: &Target) -> Option<Out> {
    match target {
        Target::Stdout => Some(Box::new(std::io::stdout())),
        Target::File(path) => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(Box::new(f)),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot open the access log; lines are dropped until SIGHUP");
                None
            }
        },
    }
}

/// The writer wakes this often and takes every queued line at once: a
/// writer woken per line would cost the request path a wake-up (and a
/// context switch) per request.
const WAKE_EVERY: Duration = Duration::from_millis(50);

/// A batch buffer grown past this (the writer fell behind) is shrunk back
/// once written, so a stall does not keep its memory for good.
const KEEP_BYTES: usize = 4 << 20;

fn write_lines(target: Target, log: Weak<AccessLog>) {
    let mut out = open(&target);
    let mut taken = Vec::new();
    loop {
        std::thread::sleep(WAKE_EVERY);
        let Some(log) = log.upgrade() else { return };
        if log.reopen.swap(false, Ordering::AcqRel) {
            if let Some(mut old) = out.take() {
                let _ = old.flush();
            }
            out = open(&target);
        }
        log.take(&mut taken);
        drop(log);
        if let (Some(w), false) = (out.as_mut(), taken.is_empty()) {
            if let Err(e) = w.write_all(&taken).and_then(|()| w.flush()) {
                warn!(error = %e, "access log write failed");
            }
        }
        if taken.capacity() > KEEP_BYTES {
            taken = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_a_rename() {
        let dir = std::env::temp_dir().join(format!("portico-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let log = AccessLog::start(Target::File(path.clone()), 16).unwrap();
        log.write(&"one");
        let wait = |p: &std::path::Path, want: &str| {
            for _ in 0..100 {
                if std::fs::read_to_string(p).is_ok_and(|t| t == want) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("{} never held {want:?}", p.display());
        };
        wait(&path, "\"one\"\n");
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.write(&"two");
        wait(&path, "\"two\"\n");
        wait(&rotated, "\"one\"\n");
        assert_eq!(log.dropped(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_batch_drops_and_counts_until_the_writer_takes_it() {
        let log = AccessLog::new(2);
        for i in 0..5 {
            log.write(&serde_json::json!({ "n": i }));
        }
        assert_eq!(log.dropped(), 3);
        let mut taken = Vec::new();
        log.take(&mut taken);
        assert_eq!(taken, b"{\"n\":0}\n{\"n\":1}\n");
        log.write(&serde_json::json!({ "n": 5 }));
        log.take(&mut taken);
        assert_eq!(taken, b"{\"n\":5}\n");
        assert_eq!(log.dropped(), 3);
    }
}
