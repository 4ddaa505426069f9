//! The registry listener: one task per TCP connection that frames and parses
//! lines and hands each command to its session, the limits on connections,
//! and the registry tokens that guard `REGISTER`.

pub mod auth;
pub mod conn_limits;
pub mod connection;
pub mod forward;
pub mod invalid_sessions;
pub mod outcome;
pub mod relay;
