//! Declarative sites (`--sites DIR`, `--global FILE`): go-proxy's site
//! files read, checked and applied like a session's change, and watched.

pub mod apply;
pub mod compile;
pub mod format;
pub mod ids;
pub mod status;
pub mod watch;
