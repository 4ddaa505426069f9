//! The edge: client connections and their limits, the TLS certificates served
//! by SNI, and stopping or upgrading without dropping a request.

pub mod certs;
pub mod connections;
pub mod lifecycle;
pub mod proxy_protocol;
pub mod shutdown;
pub mod systemd;
