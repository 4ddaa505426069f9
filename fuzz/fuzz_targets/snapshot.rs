//! What a data plane receives: bytes decoded as a push, validated and
//! compiled into a route table. A bad push must be refused, never panic,
//! and leave the data plane as it was.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use portico_data_plane::config::install::ConfigState;
use portico_data_plane::config::live::Live;
use portico_proto::v1;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(push) = v1::ConfigPush::decode(data) else {
        return;
    };
    let live = Arc::new(Live::default());
    let mut state = ConfigState::new(live.clone(), 0);
    let before = state.applied_version();
    match state.apply(push) {
        Ok(()) => {
            let table = live.table.load();
            // Every route compiled is listed once and can be looked up.
            for route in table.routes() {
                for domain in &route.spec.domains {
                    let host = domain.trim_start_matches("*.");
                    let _ = table.lookup(host, &route.spec.path);
                }
            }
        }
        Err(_) => assert_eq!(state.applied_version(), before, "a refused push changes nothing"),
    }
});
