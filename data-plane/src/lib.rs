//! The Portico data plane as a library, one folder per concern: `edge`
//! (client connections, TLS, stopping), `pipeline` and `filters` (the request
//! path), `backends`, `config` (sync and the route table) and `observe`.

pub mod allocator;
pub mod backends;
pub mod cli;
pub mod config;
pub mod edge;
pub mod filters;
pub mod observe;
pub mod pipeline;
