//! Watches `--sites DIR` and `--global FILE` (inotify, and a read every
//! second as the fallback) and applies what changed: each site as one
//! atomic change, the global defaults to every data plane, its certificates
//! through the certificate path. A file that does not read changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::Addr;
use portico_proto::v1;
use serde_yaml_ng::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::apply::ApplySite;
use super::compile::{compile, site_key, Site};
use super::format::{self, GlobalFile};
use super::status::{SiteStatus, SitesBoard};
use crate::certs::Certs;
use crate::config::committer::{Committer, ProposeError, RemoveSession};
use crate::config::global::SharedConfig;
use crate::observe::metrics::Metrics;
use crate::planes::publisher::{Publisher, SetDefaults};
use crate::session::RouteIds;

/// How often the files are read even without an event from inotify.
const POLL: Duration = Duration::from_secs(1);
/// Events closer than this are one change (an editor's save is several).
const SETTLE: Duration = Duration::from_millis(20);
/// The source name of certificates from `tls.certificates`.
pub const CERT_SOURCE: &str = "global";

/// What the watcher reaches.
pub struct SiteWatch {
    pub dir: Option<PathBuf>,
    pub global: Option<PathBuf>,
    pub committer: Addr<Committer>,
    pub publisher: Addr<Publisher>,
    pub ids: Arc<RouteIds>,
    pub config: SharedConfig,
    pub certs: Certs,
    pub metrics: Arc<Metrics>,
    pub board: SitesBoard,
}

/// The watcher's memory between passes.
#[derive(Default)]
struct Memory {
    /// Each file's content hash when last read, and the site it holds.
    files: HashMap<String, (u64, Option<String>)>,
    global: Option<u64>,
    /// `defaults.options` of the global file, as written.
    default_options: Value,
    /// Stored sites were compared with the folder once.
    swept: bool,
    /// The global file as last read well, for its certificates.
    global_file: Option<GlobalFile>,
    /// Why each certificate of the global file was not installed, as last told.
    cert_errors: HashMap<String, String>,
    /// The folder could not be listed at the last pass.
    unlisted: bool,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The site files in `dir` by file name, with their content.
fn site_files(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if !yaml || name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        // A file removed between the listing and the read is gone.
        if let Ok(bytes) = std::fs::read(entry.path()) {
            files.insert(name, bytes);
        }
    }
    Ok(files)
}

impl SiteWatch {
    /// Reads everything once, then again on every change, for as long as
    /// the control plane runs.
    pub async fn run(self) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = self.inotify(tx);
        let mut memory = Memory::default();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.pass(&mut memory).await;
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = rx.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                }
            }
        }
    }

    /// An inotify watch on the folder and the global file's folder; `None`
    /// (the poll alone then) when the system cannot give one.
    fn inotify(&self, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let mut watcher = notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            },
        )
        .map_err(
            |e| warn!(error = %e, "no inotify watch on the site files; reading them every second"),
        )
        .ok()?;
        let folders = self.dir.iter().cloned().chain(
            self.global
                .iter()
                .filter_map(|g| g.parent().map(Path::to_path_buf)),
        );
        for folder in folders {
            let folder = if folder.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                folder
            };
            if let Err(e) = watcher.watch(&folder, notify::RecursiveMode::NonRecursive) {
                warn!(folder = %folder.display(), error = %e, "cannot watch this folder; reading it every second");
            }
        }
        Some(watcher)
    }

    async fn pass(&self, memory: &mut Memory) {
        let defaults_changed = self.read_global(memory).await;
        let Some(dir) = &self.dir else {
            // Without --sites, sites stored by an earlier run go.
            if !std::mem::replace(&mut memory.swept, true) {
                self.sweep(memory).await;
            }
            return;
        };
        let files = match site_files(dir) {
            Ok(files) => {
                if std::mem::take(&mut memory.unlisted) {
                    info!(dir = %dir.display(), "site folder readable again");
                }
                files
            }
            Err(e) => {
                if !std::mem::replace(&mut memory.unlisted, true) {
                    warn!(dir = %dir.display(), error = %e, "cannot list the site folder; the sites as they are stay served");
                }
                return;
            }
        };
        // Every site a file named, so a name given twice is told apart.
        let mut held: HashMap<String, String> = memory
            .files
            .iter()
            .filter(|(file, _)| files.contains_key(*file))
            .filter_map(|(file, (_, name))| Some((name.clone()?, file.clone())))
            .collect();
        for (file, bytes) in &files {
            let hash = digest(bytes);
            let known = memory.files.get(file).cloned();
            if !defaults_changed && known.as_ref().is_some_and(|(h, _)| *h == hash) {
                continue;
            }
            let previous = known.and_then(|(_, name)| name);
            let outcome = self
                .one(file, bytes, &memory.default_options, &previous, &mut held)
                .await;
            match outcome {
                Ok(name) => {
                    memory.files.insert(file.clone(), (hash, name));
                }
                // Read again next time: the error was the store's.
                Err(Retry) => {
                    memory.files.insert(file.clone(), (0, previous));
                }
            }
        }
        let gone: Vec<(String, Option<String>)> = memory
            .files
            .iter()
            .filter(|(file, _)| !files.contains_key(*file))
            .map(|(file, (_, name))| (file.clone(), name.clone()))
            .collect();
        for (file, name) in gone {
            memory.files.remove(&file);
            self.board.lock().sites.remove(&file);
            if let Some(name) = name.filter(|n| held.get(n).is_none_or(|f| *f == file)) {
                self.remove(&name, &file).await;
            }
        }
        // Only once every file is known: a file that does not read may be
        // the one naming a stored site, which then stays served.
        let all_named = memory.files.values().all(|(_, name)| name.is_some());
        if !memory.swept && all_named {
            memory.swept = true;
            self.sweep(memory).await;
        }
    }

    /// Applies one changed file: the name of the site it holds now (the
    /// previous one when it did not apply), or `Err(Retry)` when it must be
    /// read again.
    async fn one(
        &self,
        file: &str,
        bytes: &[u8],
        defaults: &Value,
        previous: &Option<String>,
        held: &mut HashMap<String, String>,
    ) -> Result<Option<String>, Retry> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => return self.failed(file, previous, "the file is not UTF-8".into()),
        };
        let site = match compile(file, text, defaults) {
            Ok(site) => site,
            Err(e) => return self.failed(file, previous, e.to_string()),
        };
        if let Some(other) = held.get(&site.name).filter(|f| *f != file) {
            let why = format!(
                "service.name \"{}\" is already the site of {other}",
                site.name
            );
            return self.failed(file, previous, why);
        }
        if let Some(old) = previous.as_ref().filter(|n| **n != site.name) {
            // Renamed: the old site goes, its hosts free for the new one.
            held.remove(old);
            self.remove(old, file).await;
        }
        let site = Arc::new(site);
        match self.apply(site.clone()).await {
            Ok(version) => {
                held.insert(site.name.clone(), file.to_string());
                let routes = if site.enabled {
                    site.routes.len() as u32
                } else {
                    0
                };
                let mut board = self.board.lock();
                let entry = board.sites.entry(file.to_string()).or_default();
                if let Some(v) = version {
                    entry.version = v;
                    entry.applied_unix_ms = portico_proto::time::unix_ms(SystemTime::now());
                }
                *entry = SiteStatus {
                    name: site.name.clone(),
                    enabled: site.enabled,
                    routes,
                    error: None,
                    warnings: site.warnings.clone(),
                    ..entry.clone()
                };
                Ok(Some(site.name.clone()))
            }
            Err(ProposeError::Conflict(e)) => self.failed(file, previous, e.to_string()),
            Err(ProposeError::Store(e)) => {
                let _ = self.failed(file, previous, format!("not applied: {e}"));
                Err(Retry)
            }
        }
    }

    /// Commits a site and waits until every data plane serves it: the
    /// version, `None` when nothing changed.
    async fn apply(&self, site: Arc<Site>) -> Result<Option<u64>, ProposeError> {
        let ids = self.ids.clone();
        let applied = self
            .committer
            .send(ApplySite {
                site: site.clone(),
                ids,
            })
            .await
            .map_err(|_| ProposeError::Store(crate::store::StoreFailed::Failed))??;
        let Some(version) = applied.version else {
            // Another replica (or an earlier run) applied this content.
            info!(site = %site.name, file = %site.file, "site already served");
            return Ok(None);
        };
        let report = applied.acknowledged().await;
        let acked = report.as_ref().map_or(0, |r| r.acked.len());
        let missing: Vec<String> = report
            .map(|r| r.nacked.into_iter().chain(r.lagging).collect())
            .unwrap_or_default();
        if missing.is_empty() {
            info!(site = %site.name, file = %site.file, version, routes = site.routes.len(), enabled = site.enabled, data_planes = acked, "site applied");
        } else {
            warn!(site = %site.name, file = %site.file, version, not_serving = ?missing, "site committed, but not every data plane serves it");
        }
        Ok(Some(version))
    }

    async fn remove(&self, name: &str, file: &str) {
        let applied = self
            .committer
            .send(RemoveSession {
                session_key: site_key(name),
            })
            .await;
        if let Ok(applied) = applied {
            let version = applied.version;
            applied.acknowledged().await;
            info!(site = %name, %file, ?version, "site removed");
        }
    }

    /// Stored sites no file names any more (removed while the control plane
    /// was down) go, once the folder was read.
    async fn sweep(&self, memory: &Memory) {
        let named: HashSet<String> = memory
            .files
            .values()
            .filter_map(|(_, name)| name.as_ref().map(|n| site_key(n)))
            .collect();
        let stored: Vec<String> = self.config.read().site_keys();
        for key in stored.into_iter().filter(|k| !named.contains(k)) {
            let name = key.trim_start_matches(crate::session::key::SITE_PREFIX);
            self.remove(name, "(no file)").await;
        }
    }

    /// Shows, logs and counts a file that was not applied; the name it had.
    fn failed(
        &self,
        file: &str,
        previous: &Option<String>,
        error: String,
    ) -> Result<Option<String>, Retry> {
        warn!(site = %file, %error, "site file not applied; its last good state stays served");
        self.metrics.site_error(file);
        let mut board = self.board.lock();
        let entry = board.sites.entry(file.to_string()).or_default();
        entry.error = Some(format!("{file}: {error}"));
        Ok(previous.clone())
    }

    /// Reads the global file when it changed; whether its default options did.
    async fn read_global(&self, memory: &mut Memory) -> bool {
        let Some(path) = &self.global else {
            return false;
        };
        let bytes = std::fs::read(path).unwrap_or_default();
        let hash = digest(&bytes);
        let changed = memory.global != Some(hash);
        let parsed = if changed {
            memory.global = Some(hash);
            let text = String::from_utf8_lossy(&bytes);
            Some(format::read::<GlobalFile>(&text, &["defaults", "options"]))
        } else {
            None
        };
        let mut defaults_changed = false;
        let file = path.display().to_string();
        match parsed {
            None => {}
            Some(Err(e)) => {
                warn!(%file, error = %e, "global file not applied; its last good state stays served");
                self.metrics.site_error(&file);
                self.board.lock().global_error = Some(format!("{file}: {e}"));
            }
            Some(Ok(read)) => {
                defaults_changed = read.options != memory.default_options;
                memory.default_options = read.options;
                let warnings = global_warnings(&read.value, &read.unknown);
                self.publisher
                    .do_send(SetDefaults(wire_defaults(&read.value)));
                let mut board = self.board.lock();
                board.global_file = file.clone();
                board.global_error = None;
                board.global_warnings = warnings;
                drop(board);
                memory.global_file = Some(read.value);
                info!(%file, "global file applied");
            }
        }
        // Every pass: certificate files change without the global file.
        if let Some(global) = memory.global_file.clone() {
            self.certificates(&global, &mut memory.cert_errors).await;
        }
        defaults_changed
    }

    /// Installs, replaces or removes the certificates of `tls.certificates`.
    async fn certificates(&self, global: &GlobalFile, errors: &mut HashMap<String, String>) {
        let held = self.certs.current(CERT_SOURCE);
        let mut change = crate::config::history::TlsChange::default();
        let mut listed = HashSet::new();
        let entries = global
            .tls
            .iter()
            .flat_map(|t| t.certificates.iter().flatten());
        for entry in entries {
            let domains: Vec<String> = entry.domains.iter().flatten().cloned().collect();
            let name = format!(
                "{CERT_SOURCE}:{}",
                domains.first().map_or(&entry.cert_file, |d| d)
            );
            listed.insert(name.clone());
            let loaded = crate::certs::files::load_pair(
                Path::new(&entry.cert_file),
                Path::new(&entry.key_file),
                &name,
                CERT_SOURCE,
                SystemTime::now(),
            );
            match loaded {
                Ok(mut cert) => {
                    errors.remove(&name);
                    if !domains.is_empty() {
                        cert.domains = domains;
                    }
                    let same = held.get(&name).is_some_and(|c| {
                        c.chain_pem == cert.chain_pem
                            && c.key_pem == cert.key_pem
                            && c.domains == cert.domains
                    });
                    if !same {
                        change.certificates.push(Arc::new(cert));
                    }
                }
                Err(e) => {
                    let error = e.to_string();
                    if errors.get(&name) != Some(&error) {
                        warn!(certificate = %name, %error, kept = held.contains_key(&name), "not installing this certificate of the global file");
                        self.board.lock().global_error =
                            Some(format!("tls.certificates {name}: {error}"));
                        errors.insert(name.clone(), error);
                    }
                }
            }
        }
        change.certificates_removed = held
            .keys()
            .filter(|n| !listed.contains(*n))
            .cloned()
            .collect();
        if change.is_empty() {
            return;
        }
        if let Err(e) = self.certs.install(change, None).await {
            warn!(error = %e, "cannot install the certificates of the global file");
        }
    }
}

/// A pass must read the file again.
struct Retry;

fn global_warnings(global: &GlobalFile, unknown: &[String]) -> Vec<String> {
    let mut warnings: Vec<String> = unknown
        .iter()
        .map(|k| format!("unknown key {k} (ignored)"))
        .collect();
    if global
        .webhook
        .as_ref()
        .is_some_and(|w| w.enabled != Some(false) && w.url.is_some())
    {
        warnings.push("webhook: read and kept, alerts are not posted yet".into());
    }
    warnings
}

/// What the data planes are told of the global file.
pub fn wire_defaults(global: &GlobalFile) -> v1::Defaults {
    let defaults = global.defaults.as_ref();
    let blackhole = global.blackhole.unwrap_or_default();
    v1::Defaults {
        response_headers: defaults
            .and_then(|d| d.headers.as_ref())
            .into_iter()
            .flat_map(|h| &h.0)
            .map(|(name, value)| v1::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        unrouted_metrics_only: blackhole.unknown_domains.unwrap_or(false)
            && blackhole.metrics_only.unwrap_or(false),
    }
}
