//! `--cert-dir DIR`: `DIR/<name>/fullchain.pem` and `DIR/<name>/privkey.pem`,
//! the layout certbot writes, polled every second. A pair is installed once
//! it checks, so a half-written one waits; one that stops checking keeps the
//! last good pair, and a pair that expired or whose directory went is removed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portico_proto::cert;
use portico_proto::v1;
use tracing::{info, warn};

use super::Certs;
use crate::config::history::TlsChange;

pub const SOURCE: &str = "file";
const CHAIN: &str = "fullchain.pem";
const KEY: &str = "privkey.pem";
const POLL: Duration = Duration::from_secs(1);

/// Why a pair in the directory cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not UTF-8 PEM")]
    NotText { path: PathBuf },
    #[error("{dir}: {source}")]
    Invalid {
        dir: PathBuf,
        source: cert::CertError,
    },
}

/// What is known of a pair's files without reading them: length, change
/// time and inode of each (`None` while one is missing).
type Fingerprint = Option<[(u64, i128, u64); 2]>;

fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let stat = |name: &str| {
        let m = std::fs::metadata(dir.join(name)).ok()?;
        let changed = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        Some((m.len(), changed, m.ino()))
    };
    Some([stat(CHAIN)?, stat(KEY)?])
}

/// The certificate name of the pair in `DIR/<dir_name>`.
pub fn name(dir_name: &str) -> String {
    format!("{SOURCE}:{dir_name}")
}

/// Reads and checks the pair in `dir`.
pub fn load(dir: &Path, name: &str, now: SystemTime) -> Result<v1::Certificate, PairError> {
    load_pair(&dir.join(CHAIN), &dir.join(KEY), name, SOURCE, now)
}

/// Reads and checks a chain and its key, for certificate `name` of `source`.
pub fn load_pair(
    chain: &Path,
    key: &Path,
    name: &str,
    source: &str,
    now: SystemTime,
) -> Result<v1::Certificate, PairError> {
    let read = |path: &Path| {
        let bytes = std::fs::read(path).map_err(|source| PairError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        String::from_utf8(bytes).map_err(|_| PairError::NotText {
            path: path.to_path_buf(),
        })
    };
    let (chain_pem, key_pem) = (read(chain)?, read(key)?);
    let checked = cert::check(chain_pem.as_bytes(), key_pem.as_bytes(), now).map_err(|source| {
        PairError::Invalid {
            dir: chain.to_path_buf(),
            source,
        }
    })?;
    Ok(cert::to_wire(name, source, &chain_pem, &key_pem, &checked))
}

/// The subdirectories of `dir` (certificate names) and their fingerprints.
fn list(dir: &Path) -> std::io::Result<BTreeMap<String, (PathBuf, Fingerprint)>> {
    let mut pairs = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Some(dir_name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let print = fingerprint(&path);
        pairs.insert(name(&dir_name), (path, print));
    }
    Ok(pairs)
}

/// The watcher's memory between polls.
#[derive(Default)]
pub struct Watch {
    /// The fingerprint each pair had when last read.
    seen: HashMap<String, Fingerprint>,
    /// The directory could not be listed at the last poll.
    unlisted: bool,
}

impl Watch {
    /// One poll: what to change so the configuration holds every good pair
    /// in `dir`, given the file certificates it holds now.
    pub fn poll(
        &mut self,
        dir: &Path,
        held: &BTreeMap<String, Arc<v1::Certificate>>,
        now: SystemTime,
    ) -> TlsChange {
        let mut change = TlsChange::default();
        let pairs = match list(dir) {
            Ok(pairs) => {
                if std::mem::take(&mut self.unlisted) {
                    info!(dir = %dir.display(), "certificate directory readable again");
                }
                pairs
            }
            Err(e) => {
                if !std::mem::replace(&mut self.unlisted, true) {
                    warn!(dir = %dir.display(), error = %e, "cannot list the certificate directory; keeping the certificates held");
                }
                return change;
            }
        };
        let now_ms = portico_proto::time::unix_ms(now);
        for (name, (path, print)) in &pairs {
            let current = held.get(name);
            let expired = current.is_some_and(|c| c.not_after_unix_ms <= now_ms);
            if self.seen.get(name) == Some(print) && !expired {
                continue;
            }
            self.seen.insert(name.clone(), *print);
            match load(path, name, now) {
                Ok(cert) => {
                    let same = current.is_some_and(|c| {
                        c.chain_pem == cert.chain_pem && c.key_pem == cert.key_pem
                    });
                    if !same {
                        change.certificates.push(Arc::new(cert));
                    }
                }
                Err(e) if expired => {
                    warn!(certificate = %name, error = %e, "certificate expired and no good pair replaces it; removing it");
                    change.certificates_removed.push(name.clone());
                }
                Err(e) => {
                    warn!(certificate = %name, error = %e, kept = current.is_some(), "not installing this pair (waiting for a good one; the last good pair stays)");
                }
            }
        }
        self.seen.retain(|name, _| pairs.contains_key(name));
        for name in held.keys().filter(|n| !pairs.contains_key(*n)) {
            info!(certificate = %name, "certificate directory gone; removing the certificate");
            change.certificates_removed.push(name.clone());
        }
        change
    }
}

/// Polls `dir` for as long as the control plane runs.
pub async fn watch(certs: Certs, dir: PathBuf) {
    let mut watch = Watch::default();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held = certs.current(SOURCE);
        let change = watch.poll(&dir, &held, SystemTime::now());
        if change.is_empty() {
            continue;
        }
        if let Err(e) = certs.install(change, None).await {
            warn!(error = %e, "cannot install certificates from the directory");
            // Read everything again next time.
            watch.seen.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, chain: &str, key: &str) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(CHAIN), chain).unwrap();
        std::fs::write(d.join(KEY), key).unwrap();
    }

    fn self_signed(host: &str) -> (String, String) {
        cert::self_signed(&[host], 0, 30)
    }

    #[test]
    fn good_pairs_are_installed_bad_ones_wait_and_gone_ones_are_removed() {
        let dir = std::env::temp_dir().join(format!("portico-certdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a_chain, a_key) = self_signed("a.test");
        let (_, other_key) = self_signed("b.test");
        pair(&dir, "a", &a_chain, &a_key);
        pair(&dir, "half", &a_chain, &other_key);
        let mut watch = Watch::default();
        let now = SystemTime::now();
        let change = watch.poll(&dir, &BTreeMap::new(), now);
        assert_eq!(change.certificates.len(), 1);
        let a = change.certificates[0].clone();
        assert_eq!(
            (a.name.as_str(), a.domains.clone()),
            ("file:a", vec!["a.test".to_string()])
        );
        let held: BTreeMap<_, _> = [(a.name.clone(), a.clone())].into();
        // Nothing changed on disk: nothing to do.
        assert!(watch.poll(&dir, &held, now).is_empty());
        // The half-written pair is finished: installed now.
        std::fs::write(dir.join("half").join(KEY), &a_key).unwrap();
        let change = watch.poll(&dir, &held, now);
        assert_eq!(change.certificates[0].name, "file:half");
        // A truncated replacement keeps the last good pair.
        std::fs::write(dir.join("a").join(CHAIN), &a_chain[..100]).unwrap();
        assert!(watch.poll(&dir, &held, now).is_empty());
        std::fs::remove_dir_all(dir.join("a")).unwrap();
        assert_eq!(
            watch.poll(&dir, &held, now).certificates_removed,
            ["file:a"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
