//! Sessions: the pure staged/active state and the actor that owns it.

mod actor;
mod handlers;
pub mod record;
pub mod settings;
pub mod state;

pub use actor::{
    rfc3339, Exec, GlobalChanged, Home, HomeClosed, NotifyShutdown, RouteEvent, SessionActor,
    Surrender,
};
pub use state::{Identity, SessionState};
