//! The registry line protocol: framing, the pure parser, typed commands and replies.

pub mod command;
mod fields;
pub mod framing;
pub mod parser;
pub mod reply;

pub use command::*;
pub use parser::parse;
pub use reply::{Reply, ReplyCode};
