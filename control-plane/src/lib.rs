//! The Portico control plane as a library, one folder per concern: the
//! `registry` listener and its `protocol`, `session` actors, the global
//! `config` and its `store`, the data `planes`, `certs` and `observe`.
//! `portico-cp` is a thin `main` over `server::run`.

pub mod certs;
pub mod cli;
pub mod config;
pub mod observe;
pub mod planes;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod session;
pub mod sites;
pub mod store;

#[cfg(test)]
mod actor_tests;
