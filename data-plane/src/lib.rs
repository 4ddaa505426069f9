//! The Portico data plane as a library: the pure core (route table, names,
//! policies, request checks) and the Pingora services, sync and probes
//! around it. `portico-dp` is a thin `main`; the fuzz targets use the core.

pub mod access_log;
pub mod admin;
pub mod allocator;
pub mod breaker;
pub mod cache;
pub mod certs;
pub mod config;
pub mod connections;
pub mod dns;
pub mod dns_refresh;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod outbound;
pub mod policy;
pub mod proxy;
pub mod request_checks;
pub mod route_metrics;
pub mod route_window;
pub mod runtime;
pub mod shutdown;
pub mod sync;
pub mod systemd;
pub mod table;
pub mod telemetry;
pub mod view;
