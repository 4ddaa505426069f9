//! The request path: the fast path on pingora-core (`forward`) and
//! Pingora's phase callbacks (`proxy`) for the rest, both through one `gate`
//! that runs the filter chains (`chain`); `upstream` chooses and dials the backend.

pub mod answer;
pub mod attached;
pub mod chain;
pub mod client_ip;
pub mod ctx;
pub mod forward;
pub mod gate;
pub mod proxy;
pub mod rewrite;
pub mod upstream;
