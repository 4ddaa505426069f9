//! Sessions: the pure staged/active state, the actor that owns it, the
//! directory that finds it, and starting or moving actors.

mod actor;
mod directory;
mod env;
mod guard;
mod handlers;
pub mod key;
mod operations;
pub mod record;
mod route_ids;
mod sessions;
pub mod settings;
pub mod state;

pub use actor::{
    Describe, Exec, Home, HomeClosed, NotifyShutdown, RouteEvent, SessionActor, Surrender,
};
pub use directory::Directory;
pub use env::{Leave, Limits, SessionEnv, SessionSettings};
pub use route_ids::RouteIds;
pub use sessions::Sessions;
pub use state::{Identity, SessionState};
