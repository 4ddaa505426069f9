//! Any bytes a client sends: framed into lines, each parsed as a command.
//! Nothing may panic; every line gets a command or a clear error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portico_cp::protocol::framing::{Frame, LineFramer};
use portico_cp::protocol::{parse, Reply};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut framer = LineFramer::default();
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = framer.decode(&mut buf) {
        frames.push(frame);
    }
    if let Ok(Some(frame)) = framer.decode_eof(&mut buf) {
        frames.push(frame);
    }
    for frame in frames {
        if let Frame::Line(line) = frame {
            match parse(&line) {
                Ok(request) => drop(request),
                Err(e) => {
                    let rendered = Reply::error(e.message).render(e.txn.as_deref());
                    assert!(rendered.ends_with('\n'));
                    assert_eq!(rendered.matches('\n').count(), 1, "one reply line");
                }
            }
        }
    }
});
