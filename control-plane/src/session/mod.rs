//! Sessions: the pure staged/active state and the actor that owns it.

mod actor;
pub mod state;

pub use actor::{Exec, Home, HomeClosed, SessionActor};
pub use state::Identity;
