//! What the access log may keep about a client (`pii_*` options, and the
//! defaults of `--access-log-pii`): the address masked, hashed with a key
//! or hidden, and query values written as `***`. Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use portico_proto::settings::{Names, OptionKey, OptionValue};
use sha2::Sha256;

/// The `pii_*` options as set, each `None` where the route (or the
/// defaults) leave it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pii {
    pub ip: Option<&'static str>,
    pub strip_headers: Option<Names>,
    pub mask_query: Option<Names>,
    pub preserve_private: Option<bool>,
}

impl Pii {
    /// The `pii_*` options of a route's (or the defaults') options.
    pub fn of(options: &BTreeMap<OptionKey, OptionValue>) -> Pii {
        let names = |key| match options.get(&key) {
            Some(OptionValue::Names(n)) => Some(n.clone()),
            _ => None,
        };
        Pii {
            ip: match options.get(&OptionKey::PiiIp) {
                Some(OptionValue::Word(w)) => Some(*w),
                _ => None,
            },
            strip_headers: names(OptionKey::PiiStripHeaders),
            mask_query: names(OptionKey::PiiMaskQuery),
            preserve_private: match options.get(&OptionKey::PiiPreservePrivate) {
                Some(OptionValue::Bool(b)) => Some(*b),
                _ => None,
            },
        }
    }

    /// `--access-log-pii "pii_ip=hash;pii_mask_query=token,password"`.
    pub fn parse_defaults(raw: &str) -> Result<Pii, String> {
        let mut options = BTreeMap::new();
        for pair in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("\"{pair}\": expected key=value"))?;
            let key = OptionKey::from_name(key.trim()).map_err(|e| e.to_string())?;
            if !key.as_str().starts_with("pii_") {
                return Err(format!("{} is not a pii_ option", key.as_str()));
            }
            options.insert(key, key.parse_value(value).map_err(|e| e.to_string())?);
        }
        Ok(Pii::of(&options))
    }

    pub fn is_unset(&self) -> bool {
        *self == Pii::default()
    }

    /// This route's options over the defaults, key by key.
    pub fn over(&self, defaults: &Pii) -> Pii {
        Pii {
            ip: self.ip.or(defaults.ip),
            strip_headers: self
                .strip_headers
                .clone()
                .or_else(|| defaults.strip_headers.clone()),
            mask_query: self
                .mask_query
                .clone()
                .or_else(|| defaults.mask_query.clone()),
            preserve_private: self.preserve_private.or(defaults.preserve_private),
        }
    }

    /// The client as the log may keep it; `None`: as it is.
    pub fn client(&self, ip: IpAddr, key: &[u8]) -> Option<String> {
        let mode = self.ip.filter(|m| *m != "none")?;
        if self.preserve_private == Some(true) && private(ip) {
            return None;
        }
        Some(match mode {
            "last_octet" => match ip {
                IpAddr::V4(a) => {
                    let [a, b, c, _] = a.octets();
                    format!("{a}.{b}.{c}.0")
                }
                IpAddr::V6(a) => {
                    let bits = u128::from(a) & !((1u128 << 64) - 1);
                    std::net::Ipv6Addr::from(bits).to_string()
                }
            },
            "hash" => {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(ip.to_string().as_bytes());
                let digest = mac.finalize().into_bytes();
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("h:{hex}")
            }
            _ => "***".to_string(),
        })
    }

    /// The query with the values of masked parameters written as `***`.
    pub fn query<'q>(&self, query: &'q str) -> Cow<'q, str> {
        let Some(names) = self.mask_query.as_ref().filter(|n| !n.is_empty()) else {
            return Cow::Borrowed(query);
        };
        let masked = |pair: &str| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            names.contains(name) && pair.contains('=')
        };
        if !query.split('&').any(masked) {
            return Cow::Borrowed(query);
        }
        let parts: Vec<Cow<str>> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if masked(pair) => Cow::Owned(format!("{name}=***")),
                _ => Cow::Borrowed(pair),
            })
            .collect();
        Cow::Owned(parts.join("&"))
    }
}

/// Loopback, private (RFC 1918, unique local) and link-local addresses.
fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_private() || a.is_link_local(),
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pii(raw: &str) -> Pii {
        Pii::parse_defaults(raw).unwrap()
    }

    #[test]
    fn each_ip_mode_masks_as_go_proxy_does() {
        let v4: IpAddr = "203.0.113.45".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(
            pii("pii_ip=last_octet").client(v4, b"k").unwrap(),
            "203.0.113.0"
        );
        assert_eq!(
            pii("pii_ip=last_octet").client(v6, b"k").unwrap(),
            "2001:db8:1:2::"
        );
        assert_eq!(pii("pii_ip=full").client(v4, b"k").unwrap(), "***");
        assert_eq!(pii("pii_ip=none").client(v4, b"k"), None);
        assert_eq!(Pii::default().client(v4, b"k"), None);
        let hashed = pii("pii_ip=hash").client(v4, b"key one").unwrap();
        assert!(hashed.starts_with("h:") && hashed.len() == 18, "{hashed}");
        assert_eq!(
            pii("pii_ip=hash").client(v4, b"key one").unwrap(),
            hashed,
            "stable for one key"
        );
        assert_ne!(
            pii("pii_ip=hash").client(v4, b"key two").unwrap(),
            hashed,
            "another key, another hash"
        );
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            pii("pii_ip=full;pii_preserve_private=true").client(local, b"k"),
            None
        );
        assert_eq!(
            pii("pii_ip=full;pii_preserve_private=true")
                .client(v4, b"k")
                .unwrap(),
            "***"
        );
    }

    #[test]
    fn masked_parameters_keep_their_names() {
        let p = pii("pii_mask_query=token, Password");
        assert_eq!(
            p.query("q=shoes&token=abc&page=2&password=x"),
            "q=shoes&token=***&page=2&password=***"
        );
        assert_eq!(p.query("TOKEN=abc"), "TOKEN=***");
        assert!(matches!(p.query("q=shoes&tokens=1"), Cow::Borrowed(_)));
        assert_eq!(
            p.query("token"),
            "token",
            "a name without a value has nothing to hide"
        );
    }

    #[test]
    fn a_route_overrides_the_defaults_key_by_key_and_bad_defaults_are_named() {
        let defaults = pii("pii_ip=hash;pii_mask_query=token");
        let route = pii("pii_ip=none");
        let merged = route.over(&defaults);
        assert_eq!(merged.ip, Some("none"));
        assert_eq!(merged.mask_query.unwrap().to_string(), "token");
        assert!(Pii::parse_defaults("pii_ip=scramble")
            .unwrap_err()
            .contains("pii_ip"));
        assert!(Pii::parse_defaults("timeout=1s")
            .unwrap_err()
            .contains("not a pii_ option"));
        assert!(Pii::parse_defaults("pii_ip")
            .unwrap_err()
            .contains("key=value"));
    }
}
