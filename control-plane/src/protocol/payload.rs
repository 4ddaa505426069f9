//! JSON payloads in replies: the 64 KiB plain cap and the optional
//! gzip+base64 form of up to 1 MiB.

use std::io::Write;

use base64::Engine;
use flate2::{write::GzEncoder, Compression};
use serde_json::Value;

use crate::protocol::{Reply, ReplyCode};

pub const MAX_PLAIN: usize = 64 * 1024;
pub const MAX_COMPRESSED: usize = 1024 * 1024;

/// `CODE|{json}`, or `CODE|<gzip+base64>` when `compressed`.
pub fn json_reply(code: ReplyCode, value: &Value, compressed: bool) -> Reply {
    let json = value.to_string();
    if !compressed {
        if json.len() > MAX_PLAIN {
            return Reply::error("response too large; use compressed");
        }
        return Reply::with(code, json);
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let encoded = gz
        .write_all(json.as_bytes())
        .and_then(|_| gz.finish())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    match encoded {
        Ok(text) if text.len() <= MAX_COMPRESSED => Reply::with(code, text),
        Ok(_) => Reply::error("response too large even when compressed"),
        Err(e) => Reply::error(format!("internal error: compression failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    #[test]
    fn compressed_round_trip_and_plain_cap() {
        let big = Value::String("x".repeat(MAX_PLAIN + 1));
        assert_eq!(
            json_reply(ReplyCode::StatsOk, &big, false),
            Reply::error("response too large; use compressed")
        );
        let reply = json_reply(ReplyCode::StatsOk, &big, true);
        assert_eq!(reply.code, ReplyCode::StatsOk);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(reply.payload.unwrap())
            .unwrap();
        let mut out = String::new();
        GzDecoder::new(&bytes[..]).read_to_string(&mut out).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), big);
    }
}
