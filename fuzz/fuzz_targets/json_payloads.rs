//! The registry's JSON: ROUTE_ADD_BULK items, REGISTER metadata and the
//! `--registry-auth` file. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_cp::registry::auth::{TokenHash, Tokens};
use portico_cp::protocol::parse;

fuzz_target!(|text: &str| {
    let _ = parse(&format!("ROUTE_ADD_BULK|s-1|{text}"));
    let _ = parse(&format!("REGISTER|svc|svc-1|0|{text}"));
    if let Ok(tokens) = Tokens::parse(text) {
        if let Some(grant) = tokens.grant(&TokenHash::of(text)) {
            let _ = grant.covers_service(text);
            let _ = grant.covers_domain(text);
        }
    }
});
