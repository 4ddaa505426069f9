//! portico-tools: `docs` writes `docs/reference/` from the code's own
//! definitions (flags, route options, metrics, events); `docs --check`
//! fails when a page there is out of date.

mod reference;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "portico-tools", about = "Portico project tools")]
struct Args {
    #[command(subcommand)]
    command: Tool,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Write docs/reference/ (flags, options, metrics, events).
    Docs {
        /// Write nothing; fail if a page differs from what the code makes.
        #[arg(long)]
        check: bool,
        /// The folder the pages go to.
        #[arg(long, default_value_os_t = reference::folder())]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let Tool::Docs { check, out } = Args::parse().command;
    let stale = reference::write_or_check(&out, check)?;
    if check && !stale.is_empty() {
        anyhow::bail!(
            "out of date: {}; run `cargo run -p portico-tools -- docs`",
            stale.join(", ")
        );
    }
    Ok(())
}
