//! Backends: the runtime state of each route's backend (addresses, health,
//! circuit breakers, rate limiters), the probes, and the names looked up in
//! the background.

pub mod breaker;
pub mod dns;
pub mod dns_refresh;
pub mod health;
pub mod names;
pub mod runtime;
