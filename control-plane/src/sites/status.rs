//! How each site file stands, for `porticoctl sites`, `/api/v1/sites` and
//! the dashboard: what it serves, since which version, and what is wrong.

use std::collections::BTreeMap;
use std::sync::Arc;

use portico_proto::v1;
use serde_json::{json, Value};

#[derive(Debug, Clone, Default)]
pub struct SiteStatus {
    pub name: String,
    pub enabled: bool,
    pub routes: u32,
    pub version: u64,
    pub applied_unix_ms: i64,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// Every site file by file name, and the global file.
#[derive(Debug, Default)]
pub struct Board {
    pub sites: BTreeMap<String, SiteStatus>,
    pub global_file: String,
    pub global_error: Option<String>,
    pub global_warnings: Vec<String>,
}

pub type SitesBoard = Arc<parking_lot::Mutex<Board>>;

impl Board {
    pub fn to_wire(&self) -> v1::ListSitesResponse {
        v1::ListSitesResponse {
            sites: self
                .sites
                .iter()
                .map(|(file, s)| v1::SiteInfo {
                    name: s.name.clone(),
                    file: file.clone(),
                    enabled: s.enabled,
                    routes: s.routes,
                    version: s.version,
                    applied_unix_ms: s.applied_unix_ms,
                    error: s.error.clone().unwrap_or_default(),
                    warnings: s.warnings.clone(),
                })
                .collect(),
            global_file: self.global_file.clone(),
            global_error: self.global_error.clone().unwrap_or_default(),
            global_warnings: self.global_warnings.clone(),
        }
    }
}

/// The JSON view (`/api/v1/sites`, `porticoctl sites --json`).
pub fn list_json(list: &v1::ListSitesResponse) -> Value {
    let maybe = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    let sites: Vec<Value> = list
        .sites
        .iter()
        .map(|s| {
            json!({
                "name": maybe(&s.name),
                "file": s.file,
                "enabled": s.enabled,
                "routes": s.routes,
                "version": (s.version > 0).then_some(s.version),
                "applied_at": (s.applied_unix_ms > 0).then(|| {
                    portico_proto::time::rfc3339(portico_proto::time::from_unix_ms(s.applied_unix_ms))
                }),
                "error": maybe(&s.error),
                "warnings": s.warnings,
            })
        })
        .collect();
    json!({
        "sites": sites,
        "global": {
            "file": maybe(&list.global_file),
            "error": maybe(&list.global_error),
            "warnings": list.global_warnings,
        },
    })
}
