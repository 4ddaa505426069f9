//! The PROXY protocol (HAProxy's, v1 text and v2 binary) that a load
//! balancer sends first on a connection to `--listen-proxy-protocol`: the
//! client's address. Pure: bytes in, the header's length and source out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, its CRLF included.
const V1_MAX: usize = 107;

/// What the start of a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Not whole yet: read more.
    Partial,
    /// A header of `len` bytes; `source` is `None` for `UNKNOWN` / `LOCAL`
    /// (the balancer's own connection, such as a health check).
    Whole {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a PROXY protocol header: the connection is closed.
    Invalid,
}

pub fn parse(buf: &[u8]) -> Header {
    if buf.starts_with(b"PROXY ") || b"PROXY ".starts_with(buf) {
        return v1(buf);
    }
    let sig = buf.len().min(12);
    if buf[..sig] == V2_SIGNATURE[..sig] {
        return v2(buf);
    }
    Header::Invalid
}

fn v1(buf: &[u8]) -> Header {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Header::Invalid
        } else {
            Header::Partial
        };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Header::Invalid;
    }
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Header::Invalid;
    };
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Whole { len, source: None },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip = src.parse::<IpAddr>().ok();
            let port = sport.parse::<u16>().ok();
            match (ip, port) {
                (Some(ip @ IpAddr::V4(_)), Some(port)) if *family == "TCP4" => Header::Whole {
                    len,
                    source: Some(SocketAddr::new(ip, port)),
                },
                (Some(ip @ IpAddr::V6(_)), Some(port)) if *family == "TCP6" => Header::Whole {
                    len,
                    source: Some(SocketAddr::new(ip, port)),
                },
                _ => Header::Invalid,
            }
        }
        _ => Header::Invalid,
    }
}

fn v2(buf: &[u8]) -> Header {
    if buf.len() < 16 {
        return Header::Partial;
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Header::Invalid;
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Header::Partial;
    }
    let body = &buf[16..len];
    let source = match (version_command & 0x0f, buf[13]) {
        // LOCAL: the balancer's own connection.
        (0, _) => None,
        // PROXY over TCP/IPv4 (0x11) or TCP/IPv6 (0x21); UDP and Unix
        // sockets carry no address to serve.
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (1, 0x21) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (1, 0x00) => None,
        _ => return Header::Invalid,
    };
    Header::Whole { len, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn version_1_headers_name_the_client() {
        let h = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Header::Whole {
                len: 44,
                source: addr("203.0.113.7:56324")
            }
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 80\r\n";
        assert_eq!(
            parse(h),
            Header::Whole {
                len: h.len(),
                source: addr("[2001:db8::7]:4711")
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Header::Whole {
                len: 15,
                source: None
            }
        );
        assert_eq!(parse(b"PROXY TCP4 203.0.113.7"), Header::Partial);
        assert_eq!(parse(b"PRO"), Header::Partial);
    }

    #[test]
    fn version_2_headers_name_the_client() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([
            0x21, 0x11, 0, 12, 203, 0, 113, 7, 192, 0, 2, 1, 0xdc, 0x04, 0x01, 0xbb,
        ]);
        h.extend(b"GET /");
        assert_eq!(
            parse(&h),
            Header::Whole {
                len: 28,
                source: addr("203.0.113.7:56324")
            }
        );
        assert_eq!(parse(&h[..20]), Header::Partial);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Header::Whole {
                len: 16,
                source: None
            }
        );
        let mut six = V2_SIGNATURE.to_vec();
        six.extend([0x21, 0x21, 0, 36]);
        six.extend(
            std::iter::once(0x20)
                .chain([0x01, 0x0d, 0xb8])
                .chain([0; 11])
                .chain([7]),
        );
        six.extend([0u8; 16]);
        six.extend([0x12, 0x67, 0, 80]);
        assert_eq!(
            parse(&six),
            Header::Whole {
                len: 52,
                source: addr("[2001:db8::7]:4711")
            }
        );
    }

    #[test]
    fn anything_else_is_refused_without_waiting() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 nope 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n",
            &[b'P'; 2][..],
        ] {
            assert_eq!(
                parse(bad),
                Header::Invalid,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Header::Invalid);
        let mut v3 = V2_SIGNATURE.to_vec();
        v3.extend([0x31, 0x11, 0, 0]);
        assert_eq!(parse(&v3), Header::Invalid);
    }
}
