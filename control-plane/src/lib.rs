//! The Portico control plane as a library: the pure core (protocol, session
//! state, global configuration, version history, fleet) and the actors and
//! listeners around it. `portico-cp` is a thin `main` over `server::run`.

pub mod admin;
pub mod auth;
pub mod certs;
pub mod committer;
pub mod conn_limits;
pub mod dashboard;
pub mod fleet;
pub mod global;
pub mod grpc;
pub mod history;
pub mod metrics;
pub mod payload;
pub mod peers;
pub mod plane_commands;
pub mod protocol;
pub mod publisher;
pub mod registry;
pub mod server;
pub mod session;
pub mod state_file;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod actor_tests;
