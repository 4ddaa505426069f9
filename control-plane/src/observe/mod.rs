//! What operators see: the admin listener with its dashboard and JSON API,
//! Prometheus metrics, and the telemetry the data planes report.

pub mod admin;
pub mod dashboard;
pub mod metrics;
pub mod series;
pub mod telemetry;
