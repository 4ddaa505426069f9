//! Durations as the protocol and flags take them (`500ms`, `1m30s`).
//! Nothing may panic; a parsed duration is positive unless zero was allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_proto::duration::{parse_duration, parse_duration_or_zero};

fuzz_target!(|text: &str| {
    if let Ok(d) = parse_duration(text) {
        assert!(!d.is_zero());
    }
    let _ = parse_duration_or_zero(text);
});
