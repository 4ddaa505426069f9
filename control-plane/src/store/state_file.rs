//! Export and import of the whole stored state as JSON, for backups and
//! moves between machines. Both run on a stopped control plane's data dir.

use std::io::{Read, Write};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::store::{Batch, SessionRecord, Store};

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    version: u64,
    route_reserved: u64,
    sessions: Vec<SessionRecord>,
}

pub fn export(store: &dyn Store, mut out: impl Write) -> anyhow::Result<()> {
    let loaded = store.load()?;
    let file = StateFile {
        format: 1,
        version: loaded.version,
        route_reserved: loaded.route_reserved,
        // Keys, never ids, even from a store not migrated yet.
        sessions: loaded.sessions.into_iter().map(|s| s.keyed()).collect(),
    };
    serde_json::to_writer_pretty(&mut out, &file)?;
    writeln!(out)?;
    Ok(())
}

/// Replaces every stored session; the version and route reservation only grow.
pub fn import(store: &dyn Store, mut input: impl Read) -> anyhow::Result<()> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let mut file: StateFile = serde_json::from_str(&text).context("reading the state JSON")?;
    // An export from before keys holds ids: they are stored as keys.
    file.sessions = file.sessions.into_iter().map(|s| s.keyed()).collect();
    anyhow::ensure!(file.format == 1, "unknown state format {}", file.format);
    for record in &file.sessions {
        record.restore().context("checking the imported sessions")?;
    }
    let current = store.load()?;
    let batch = Batch {
        version: Some(file.version.max(current.version)),
        route_reserved: Some(file.route_reserved.max(current.route_reserved)),
        put: file.sessions,
        delete: current.sessions.into_iter().map(|s| s.id).collect(),
        // Fleet membership belongs to this machine's data planes, not to the backup.
        ..Default::default()
    };
    store.commit(&batch)?;
    Ok(())
}
