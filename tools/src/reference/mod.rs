//! The reference pages, each made from the definitions the binaries use:
//! clap for flags, the settings model for options, the metric catalogues
//! and the event types.

mod events;
mod flags;
mod markdown;
mod metrics;
mod options;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

/// `docs/reference/` of this checkout.
pub fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference")
}

/// Every page: its file name and its text.
pub fn pages() -> Vec<(&'static str, String)> {
    vec![
        ("flags.md", flags::page()),
        ("options.md", options::page()),
        ("metrics.md", metrics::page()),
        ("events.md", events::page()),
    ]
}

/// Writes the pages into `dir` (or with `check` only compares); returns
/// the names of those that were (or would be) changed.
pub fn write_or_check(dir: &Path, check: bool) -> std::io::Result<Vec<&'static str>> {
    if !check {
        std::fs::create_dir_all(dir)?;
    }
    let mut stale = Vec::new();
    for (name, text) in pages() {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        stale.push(name);
        if !check {
            std::fs::write(&path, text)?;
        }
    }
    Ok(stale)
}
