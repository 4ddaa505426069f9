//! The snapshot cache: every acknowledged configuration written atomically
//! to disk, so a data plane can start serving without the control plane.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portico_proto::v1::{self, config_push::Body};
use portico_proto::RouteSpec;
use prost::Message;

/// Writes the configuration to `path` via a temporary file and a rename,
/// so a crash leaves the old cache or the new one, never half of one. The
/// temporary file is the process's own: during an upgrade the old and the
/// new process both write the cache. It holds private keys, so only the
/// owner may read it.
pub fn save<'a>(
    path: &Path,
    version: u64,
    routes: &HashMap<String, Arc<RouteSpec>>,
    certificates: impl Iterator<Item = &'a v1::Certificate>,
    challenges: &HashMap<String, String>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let push = v1::ConfigPush {
        version,
        body: Some(Body::Snapshot(v1::Snapshot {
            routes: routes
                .values()
                .map(|r| v1::Route::from(r.as_ref()))
                .collect(),
            certificates: certificates.cloned().collect(),
            challenges: challenges
                .iter()
                .map(|(token, key_authorization)| v1::AcmeChallenge {
                    token: token.clone(),
                    key_authorization: key_authorization.clone(),
                })
                .collect(),
        })),
        ..Default::default()
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&push.encode_to_vec())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A snapshot cache that is there but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("snapshot cache {path} is unreadable: {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("reading snapshot cache {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The cached configuration, if there is a readable one.
pub fn load(path: &Path) -> Result<Option<v1::ConfigPush>, CacheError> {
    match std::fs::read(path) {
        Ok(bytes) => v1::ConfigPush::decode(bytes.as_slice())
            .map(Some)
            .map_err(|source| CacheError::Decode {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CacheError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}
