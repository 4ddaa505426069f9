//! The flags of the control plane's binaries, kept in the library so the
//! reference pages (`portico-tools docs`) are generated from them.

pub mod cp;
pub mod ctl;
