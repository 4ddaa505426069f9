//! Sessions: the pure staged/active state and the actor that owns it.

mod actor;
mod directory;
mod guard;
mod handlers;
pub mod record;
pub mod settings;
mod shared;
pub mod state;

pub use actor::{
    Describe, Exec, Home, HomeClosed, NotifyShutdown, RouteEvent, SessionActor, Surrender,
};
pub use directory::Directory;
pub use shared::{Limits, SessionSettings, Shared};
pub use state::{Identity, SessionState};
