//! The registry line protocol: framing, the pure parser, typed commands and
//! replies, and the JSON payloads replies carry.

pub mod command;
pub(crate) mod fields;
pub mod framing;
pub mod parser;
pub mod payload;
pub mod reply;

pub use command::*;
pub use parser::parse;
pub use reply::{Reply, ReplyCode};
