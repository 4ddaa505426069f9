//! Line framing for the registry protocol: `\n`-terminated, `\r` stripped,
//! 16 KiB cap. Errors are frames, not stream failures, so a connection
//! survives a bad line.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Line(String),
    TooLong,
    InvalidUtf8,
}

/// Splits a byte stream into [`Frame`]s. After an overlong line it discards
/// bytes up to the next newline and then yields one `TooLong`.
#[derive(Debug, Default)]
pub struct LineFramer {
    discarding: bool,
    /// Since when an unfinished line has been waiting for its newline.
    partial_since: Option<Instant>,
}

impl LineFramer {
    /// Since when the bytes of an unfinished line have been held, if any.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    fn note(&mut self, buf: &BytesMut) {
        if buf.is_empty() && !self.discarding {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
    }
}

impl LineFramer {
    /// The next frame in `buf`, if a whole one is there.
    fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            let newline = buf.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discarding = false;
                        return Some(Frame::TooLong);
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                }
            }
            let Some(i) = newline else {
                if buf.len() > MAX_LINE {
                    self.discarding = true;
                    continue;
                }
                return None;
            };
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            if line.len() > MAX_LINE {
                return Some(Frame::TooLong);
            }
            if line.is_empty() {
                continue;
            }
            return Some(match String::from_utf8(line.to_vec()) {
                Ok(s) => Frame::Line(s),
                Err(_) => Frame::InvalidUtf8,
            });
        }
    }
}

impl Decoder for LineFramer {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        let frame = self.next_frame(buf);
        self.note(buf);
        Ok(frame)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // A last line without its newline still counts, as `printf 'PING|x' | nc` expects.
        if buf.is_empty() || self.discarding {
            buf.clear();
            return Ok(None);
        }
        buf.extend_from_slice(b"\n");
        self.decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut codec = LineFramer::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn an_unfinished_line_is_timed_from_its_first_bytes() {
        let mut codec = LineFramer::default();
        let mut buf = BytesMut::from(&b"PING|a\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert_eq!(codec.partial_since(), None);
        buf.extend_from_slice(b"PIN");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        let since = codec.partial_since().expect("a line is open");
        buf.extend_from_slice(b"G|");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(
            codec.partial_since(),
            Some(since),
            "more bytes do not restart it"
        );
        buf.extend_from_slice(b"b\n");
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert_eq!(codec.partial_since(), None);
    }

    #[test]
    fn splits_strips_cr_and_skips_empty_lines() {
        assert_eq!(
            frames(b"PING|a\r\n\n\r\nPING|b\nlast"),
            vec![
                Frame::Line("PING|a".into()),
                Frame::Line("PING|b".into()),
                Frame::Line("last".into())
            ]
        );
    }

    #[test]
    fn overlong_line_is_one_error_and_the_next_line_survives() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.extend_from_slice(b"\nPING|a\n");
        assert_eq!(
            frames(&input),
            vec![Frame::TooLong, Frame::Line("PING|a".into())]
        );
        let exact = [vec![b'y'; MAX_LINE], b"\n".to_vec()].concat();
        assert_eq!(frames(&exact).len(), 1);
        assert!(matches!(frames(&exact)[0], Frame::Line(_)));
    }

    #[test]
    fn overlong_line_arriving_in_pieces() {
        let mut codec = LineFramer::default();
        let mut buf = BytesMut::new();
        for _ in 0..5 {
            buf.extend_from_slice(&[b'z'; 8000]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
        }
        buf.extend_from_slice(b"tail\nPING|q\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::TooLong));
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::Line("PING|q".into()))
        );
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(
            frames(b"\xff\xfe\nPING|a\n"),
            vec![Frame::InvalidUtf8, Frame::Line("PING|a".into())]
        );
    }
}
