//! The global configuration: every session's active routes and the
//! certificates, the committer that changes it one commit at a time, and the
//! history of versions the publisher sends deltas from.

pub mod committer;
pub mod global;
pub mod history;
