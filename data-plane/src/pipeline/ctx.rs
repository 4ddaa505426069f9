//! One request's state across Pingora's phase callbacks, and what is read
//! from its head once: the host and the request id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::config::table::{Pool, RouteEntry};
use crate::edge::lifecycle::InFlight;
pub use crate::pipeline::chain::request_host;
use crate::pipeline::chain::Admission;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub struct RequestCtx {
    pub started: Instant,
    pub pool: Option<Arc<Pool>>,
    /// The route chosen; its chain's `on_done` runs when the request ends.
    pub route: Option<Arc<RouteEntry>>,
    pub admission: Admission,
    /// Route ids tried already, for retries.
    pub tried: Vec<String>,
    /// Sent to the backend and back to the client as `X-Request-Id`.
    pub request_id: HeaderValue,
    /// The address dialled last, when the upstream was tried, and how long
    /// until its response head came.
    pub upstream: Option<(SocketAddr, Instant)>,
    pub upstream_took: Option<Duration>,
    /// The request came over TLS.
    pub tls: bool,
    /// Who sent it: the connection's address, or the one a trusted proxy named.
    pub client: Option<crate::pipeline::client_ip::Client>,
    /// Counts the request until it is done, so a stopping data plane waits for it.
    pub _in_flight: InFlight,
}

impl RequestCtx {
    pub fn new(in_flight: InFlight) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            pool: None,
            route: None,
            admission: Admission::default(),
            tried: Vec::new(),
            request_id: HeaderValue::from_static(""),
            upstream: None,
            upstream_took: None,
            tls: false,
            client: None,
            _in_flight: in_flight,
        }
    }
}

/// How a request ended, for `Gate::finish`.
pub struct Ended<'a> {
    pub head: &'a RequestHeader,
    pub client: Option<&'a pingora::protocols::l4::socket::SocketAddr>,
    /// The status written to the client, if a response head was.
    pub status: Option<u16>,
    pub error: Option<&'a pingora::Error>,
    /// Body bytes read from and sent to the client.
    pub read: u64,
    pub sent: u64,
    /// The forwarding path that served it.
    pub path: crate::observe::route_metrics::Path,
}

/// The client's `X-Request-Id` when it is sane (1–128 of `A-Z a-z 0-9 - _ . : +`),
/// otherwise a new random one. One value, shared by the request to the
/// backend and the response: cloning it copies no bytes.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    let given = req.headers.get(X_REQUEST_ID).filter(|v| {
        (1..=128).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+".contains(b))
    });
    match given {
        Some(v) => v.clone(),
        None => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = rand::random::<u128>();
            let hex: [u8; 32] = std::array::from_fn(|i| HEX[(n >> (124 - 4 * i)) as usize & 0xf]);
            // An owner-backed `Bytes` is reference-counted from the start,
            // so the two clones allocate nothing.
            HeaderValue::from_maybe_shared(Bytes::from_owner(hex))
                .expect("hex digits are a valid header value")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(id: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(id) = id {
            req.insert_header("x-request-id", id).unwrap();
        }
        req
    }

    #[test]
    fn a_sane_request_id_is_kept_and_any_other_is_replaced_by_32_hex_digits() {
        assert_eq!(request_id(&head(Some("abc-1.2:3+_"))), "abc-1.2:3+_");
        let made = [
            request_id(&head(None)),
            request_id(&head(Some("has space"))),
        ];
        for id in &made {
            let text = id.to_str().unwrap();
            assert_eq!(text.len(), 32, "{text}");
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(made[0], made[1]);
        assert_ne!(
            request_id(&head(Some(&"a".repeat(129)))),
            "a".repeat(129).as_str()
        );
    }
}
