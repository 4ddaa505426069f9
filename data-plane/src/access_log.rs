//! The access log (`--access-log PATH|-`): one JSON object per request,
//! handed to a writer thread through a bounded queue. A full queue drops the
//! line and counts it; a request never waits. SIGHUP reopens the file.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

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

pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Starts the writer thread; the file is opened (and created) there, so
    /// a slow file system never holds up the caller.
    pub fn start(target: Target, capacity: usize) -> std::io::Result<Arc<AccessLog>> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || write_lines(target, rx, flag))?;
        Ok(Arc::new(AccessLog {
            tx,
            dropped: AtomicU64::new(0),
            reopen,
        }))
    }

    /// Queues a line; drops and counts it when the queue is full.
    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The file is reopened before the next line (for logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

type Out = BufWriter<Box<dyn Write + Send>>;

fn open(target: &Target) -> Option<Out> {
    let sink: Box<dyn Write + Send> = match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot open the access log; lines are dropped until SIGHUP");
                return None;
            }
        },
    };
    Some(BufWriter::with_capacity(256 * 1024, sink))
}

/// The writer wakes this often and takes every queued line at once: a
/// writer woken per line would cost the request path a wake-up (and a
/// context switch) per request.
const WAKE_EVERY: Duration = Duration::from_millis(50);

fn write_lines(target: Target, rx: Receiver<String>, reopen: Arc<AtomicBool>) {
    let mut out = open(&target);
    loop {
        std::thread::sleep(WAKE_EVERY);
        if reopen.swap(false, Ordering::AcqRel) {
            if let Some(mut old) = out.take() {
                let _ = old.flush();
            }
            out = open(&target);
        }
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    if let Some(w) = out.as_mut() {
                        let _ = w.write_all(line.as_bytes());
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Some(w) = out.as_mut() {
            if let Err(e) = w.flush() {
                warn!(error = %e, "access log write failed");
            }
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
        log.write("one\n".into());
        let wait = |p: &std::path::Path, want: &str| {
            for _ in 0..100 {
                if std::fs::read_to_string(p).is_ok_and(|t| t == want) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("{} never held {want:?}", p.display());
        };
        wait(&path, "one\n");
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.write("two\n".into());
        wait(&path, "two\n");
        wait(&rotated, "one\n");
        assert_eq!(log.dropped(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
