//! `--geoip-db PATH`: a MaxMind DB file (GeoLite2 or GeoIP2 Country or
//! City, or any database with `country.iso_code`), looked up per request
//! and read again when the file changes; a file that does not read keeps
//! the last good one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use maxminddb::{path, Reader};
use tracing::{info, warn};

/// How often the file is checked for a change.
const POLL: Duration = Duration::from_secs(1);

pub struct GeoDb {
    path: PathBuf,
    reader: ArcSwapOption<Reader<Vec<u8>>>,
}

/// A country code, upper-case (`DE`).
pub type Country = [u8; 2];

impl GeoDb {
    /// Opens the database; an error when it cannot be read at start.
    pub fn open(path: &Path) -> Result<GeoDb, maxminddb::MaxMindDbError> {
        let reader = Reader::open_readfile(path)?;
        info!(path = %path.display(), kind = %reader.metadata().database_type, "GeoIP database");
        Ok(GeoDb {
            path: path.to_path_buf(),
            reader: ArcSwapOption::from_pointee(reader),
        })
    }

    /// The country of `ip`; `None` when the database does not know it.
    pub fn country(&self, ip: IpAddr) -> Option<Country> {
        let reader = self.reader.load();
        let found = reader.as_ref()?.lookup(ip).ok()?;
        let code: &str = found.decode_path(&path!["country", "iso_code"]).ok()??;
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => None,
        }
    }

    /// Reads the file again whenever it changes, for as long as the data
    /// plane runs.
    pub async fn watch(self: Arc<Self>) {
        let stamp = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let mut seen: Option<(SystemTime, u64)> = stamp(&self.path);
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamp(&self.path);
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            match Reader::open_readfile(&self.path) {
                Ok(reader) => {
                    info!(path = %self.path.display(), "GeoIP database read again");
                    self.reader.store(Some(Arc::new(reader)));
                }
                Err(e) => {
                    warn!(path = %self.path.display(), error = %e, "the GeoIP database does not read; keeping the last good one")
                }
            }
        }
    }
}
