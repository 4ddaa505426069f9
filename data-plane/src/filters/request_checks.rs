//! Requests refused before routing: 431 for a head over the limits, 400 for
//! a missing, repeated or malformed Host and for a head carrying both
//! Content-Length and Transfer-Encoding (the request-smuggling shape).
//! Pingora refuses conflicting Content-Lengths on its own.

use http::header::{HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request};

/// How big a request head may be.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Header fields, counted one per name and value.
    pub count: usize,
    /// Bytes of the target and every header's name and value.
    pub bytes: usize,
}

/// The filter: a refused request is answered and its connection closed.
pub struct RequestChecks(pub HeadLimits);

impl Filter for RequestChecks {
    fn on_request(&self, req: &Request<'_>, _: &mut Admission) -> Flow {
        match problem(req.head, req.raw_head, self.0) {
            Some((status, why)) => {
                Flow::Answer(Answer::text(status, format!("portico: {why}\n")).close())
            }
            None => Flow::Next,
        }
    }
}

/// Why a request is refused, with the status to answer, or `None`.
/// `raw_head` is the request head as received (HTTP/1), which still holds a
/// Content-Length that Pingora drops when Transfer-Encoding is present.
pub fn problem(
    req: &RequestHeader,
    raw_head: Option<&[u8]>,
    limits: HeadLimits,
) -> Option<(u16, &'static str)> {
    if req.headers.len() > limits.count {
        return Some((431, "too many request header fields"));
    }
    let size = req.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum::<usize>();
    if size > limits.bytes {
        return Some((431, "request header fields too large"));
    }
    let mut hosts = req.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Some((400, "more than one Host header")),
        (Some(host), None) if !valid_host(host.as_bytes()) => {
            return Some((400, "invalid Host header"))
        }
        (None, _) if req.uri.host().is_none() && req.version == http::Version::HTTP_11 => {
            return Some((400, "missing Host header"))
        }
        _ => {}
    }
    if req.headers.contains_key(TRANSFER_ENCODING) && raw_head.is_some_and(has_content_length) {
        return Some((400, "both Content-Length and Transfer-Encoding"));
    }
    None
}

/// A host name, IPv4 address or `[IPv6]`, with an optional port.
fn valid_host(value: &[u8]) -> bool {
    let port = match value.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(end) => {
                let inside = &rest[..end];
                let ok = !inside.is_empty()
                    && inside
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || b":.".contains(b));
                if !ok {
                    return false;
                }
                &rest[end + 1..]
            }
            None => return false,
        },
        None => {
            let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            let host = &value[..colon];
            let ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b));
            if !ok {
                return false;
            }
            &value[colon..]
        }
    };
    match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some(digits) => (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit),
    }
}

fn has_content_length(head: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n')
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        count: 10,
        bytes: 200,
    };

    fn check(r: &RequestHeader, raw: Option<&[u8]>) -> Option<&'static str> {
        problem(r, raw, LIMITS).map(|(_, why)| why)
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn hosts() {
        for ok in [
            "a.test",
            "a.test:8080",
            "127.0.0.1:80",
            "[::1]:8443",
            "[fe80::1]",
            "svc_1.local",
        ] {
            assert_eq!(check(&req(&[("host", ok)]), None), None, "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a.test:",
            "a.test:123456",
            "a/b",
            "[::1",
            "[zz]",
            "a.test:80:90",
            "a@b",
        ] {
            assert_eq!(
                check(&req(&[("host", bad)]), None),
                Some("invalid Host header"),
                "{bad:?}"
            );
        }
        assert_eq!(check(&req(&[]), None), Some("missing Host header"));
        assert_eq!(
            check(&req(&[("host", "a.test"), ("host", "b.test")]), None),
            Some("more than one Host header")
        );
    }

    #[test]
    fn both_lengths_are_refused() {
        let r = req(&[("host", "a.test"), ("transfer-encoding", "chunked")]);
        let raw = b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            check(&r, Some(raw)),
            Some("both Content-Length and Transfer-Encoding")
        );
        let raw = b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check(&r, Some(raw)), None);
    }

    #[test]
    fn heads_over_the_limits_get_431() {
        let many: Vec<(String, &str)> = (0..11).map(|i| (format!("x-{i}"), "v")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            problem(&req(&many), None, LIMITS),
            Some((431, "too many request header fields"))
        );
        let big = "a".repeat(200);
        assert_eq!(
            problem(&req(&[("host", "a.test"), ("x-big", &big)]), None, LIMITS),
            Some((431, "request header fields too large"))
        );
    }
}
