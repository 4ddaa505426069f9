//! The real client behind trusted proxies (`--trusted-proxies`): taken from
//! `X-Forwarded-For` (the right-most address not itself trusted) or
//! `Forwarded`, only when the connection comes from a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use portico_proto::ip_set::IpSet;

pub const FORWARDED: http::HeaderName = http::header::FORWARDED;
pub const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Who sent a request, as the filters and the access log see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The connection's own address (no trusted proxy, or no header).
    Peer(IpAddr),
    /// Named by the trusted proxy the connection came from.
    Forwarded(IpAddr),
    /// From a trusted proxy, with a header that does not parse: the
    /// connection's address is used, and the request counted.
    Malformed(IpAddr),
}

impl Client {
    pub fn ip(self) -> IpAddr {
        match self {
            Client::Peer(ip) | Client::Forwarded(ip) | Client::Malformed(ip) => ip,
        }
    }
}

/// The client of a request that came from `peer`.
pub fn real_client(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> Client {
    if trusted.is_empty() || !trusted.contains(peer) {
        return Client::Peer(peer);
    }
    let found = if headers.contains_key(X_FORWARDED_FOR) {
        from_chain(headers, X_FORWARDED_FOR, trusted, entry_ip)
    } else if headers.contains_key(FORWARDED) {
        from_chain(headers, FORWARDED, trusted, forwarded_for)
    } else {
        return Client::Peer(peer);
    };
    match found {
        Some(ip) => Client::Forwarded(ip),
        None => Client::Malformed(peer),
    }
}

/// Walks the hops of every `name` header from the right (the hop nearest
/// to this proxy): the first one not trusted, else the left-most; `None`
/// when a hop does not parse.
fn from_chain(
    headers: &HeaderMap,
    name: http::HeaderName,
    trusted: &IpSet,
    parse: fn(&str) -> Option<IpAddr>,
) -> Option<IpAddr> {
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let value = value.to_str().ok()?;
        hops.extend(value.split(',').map(str::trim));
    }
    let mut leftmost = None;
    for hop in hops.iter().rev() {
        let ip = parse(hop)?;
        if !trusted.contains(ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// An `X-Forwarded-For` hop: an address, with a port or brackets as some
/// proxies write it.
fn entry_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches('"');
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// A `Forwarded` element's `for=` (RFC 7239): `for=192.0.2.60`,
/// `for="[2001:db8::1]:4711"`; obfuscated and `unknown` nodes do not parse.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.eq_ignore_ascii_case("for").then_some(value)
    })?;
    entry_ip(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let trusted = IpSet::parse("10.0.0.0/8").unwrap();
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            real_client(ip("203.0.113.9"), &spoofed, &trusted),
            Client::Peer(ip("203.0.113.9"))
        );
        assert_eq!(
            real_client(ip("10.0.0.1"), &spoofed, &trusted),
            Client::Forwarded(ip("1.2.3.4"))
        );
        assert_eq!(
            real_client(ip("10.0.0.1"), &spoofed, &IpSet::default()),
            Client::Peer(ip("10.0.0.1"))
        );
        assert_eq!(
            real_client(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            Client::Peer(ip("10.0.0.1"))
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_wins_so_a_client_cannot_spoof_past_the_proxies() {
        let trusted = IpSet::parse("10.0.0.0/8,::1").unwrap();
        // The client wrote 6.6.6.6 itself; the first proxy appended the
        // address it saw (198.51.100.7); the second, trusted, its own peer.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &chain, &trusted),
            Client::Forwarded(ip("198.51.100.7"))
        );
        // Several header lines are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "2001:db8::7, 10.1.1.1"),
        ]);
        assert_eq!(
            real_client(ip("::1"), &split, &trusted),
            Client::Forwarded(ip("2001:db8::7"))
        );
        // Every hop trusted: the left-most.
        let inner = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &inner, &trusted),
            Client::Forwarded(ip("10.9.9.9"))
        );
        let ported = headers(&[("x-forwarded-for", "[2001:db8::9]:443, 192.0.2.1:5555")]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &ported, &trusted),
            Client::Forwarded(ip("192.0.2.1"))
        );
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let trusted = IpSet::parse("10.0.0.0/8").unwrap();
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\"",
        )]);
        assert_eq!(
            real_client(ip("10.0.0.2"), &h, &trusted),
            Client::Forwarded(ip("2001:db8:cafe::17"))
        );
    }

    #[test]
    fn a_malformed_header_leaves_the_peer() {
        let trusted = IpSet::parse("10.0.0.0/8").unwrap();
        for bad in [
            ("x-forwarded-for", "1.2.3.4, not-an-ip"),
            ("x-forwarded-for", ""),
            ("forwarded", "for=unknown"),
            ("forwarded", "for=_hidden"),
            ("forwarded", "proto=https"),
        ] {
            let h = headers(&[bad]);
            assert_eq!(
                real_client(ip("10.0.0.2"), &h, &trusted),
                Client::Malformed(ip("10.0.0.2")),
                "{bad:?}"
            );
        }
    }
}
