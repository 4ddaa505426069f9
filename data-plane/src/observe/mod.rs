//! What operators see: per-route counters, Prometheus metrics, the telemetry
//! sent to the control plane, the access log and the admin listener.

pub mod access_line;
pub mod access_log;
pub mod admin;
pub mod metrics;
pub mod pii;
pub mod route_metrics;
pub mod route_window;
pub mod telemetry;
pub mod view;
