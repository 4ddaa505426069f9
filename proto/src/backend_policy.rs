//! Which backend addresses may be proxied to: the control plane checks
//! literal addresses at command time, data planes check what names resolve
//! to. By default link-local (cloud metadata) and unspecified addresses are denied.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::v1;

/// Denied unless the operator says otherwise: cloud metadata services live
/// at link-local addresses; the unspecified address reaches the host itself.
pub const DEFAULT_DENY: [&str; 4] = ["169.254.0.0/16", "fe80::/10", "0.0.0.0/32", "::/128"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid CIDR \"{0}\": expected e.g. 10.0.0.0/8, fd00::/8 or 192.0.2.7")]
    Cidr(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPolicy {
    deny: Vec<IpNet>,
    /// When not empty, only these (less what `deny` covers more precisely).
    allow: Vec<IpNet>,
}

impl Default for BackendPolicy {
    fn default() -> Self {
        BackendPolicy::new(&DEFAULT_DENY, &[] as &[&str]).expect("the default deny list parses")
    }
}

fn parse_all(list: &[impl AsRef<str>]) -> Result<Vec<IpNet>, PolicyError> {
    list.iter()
        .map(|s| s.as_ref().trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| PolicyError::Cidr(s.to_string()))
        })
        .collect()
}

impl BackendPolicy {
    pub fn new(deny: &[impl AsRef<str>], allow: &[impl AsRef<str>]) -> Result<Self, PolicyError> {
        Ok(BackendPolicy {
            deny: parse_all(deny)?,
            allow: parse_all(allow)?,
        })
    }

    /// An address is allowed when it is in the allow list (if there is one)
    /// and no deny entry covers it more precisely than the allow entry that
    /// let it in: `--backend-allow 169.254.7.0/24` opens that range within
    /// the default deny of 169.254.0.0/16.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let longest = |list: &[IpNet]| {
            list.iter()
                .filter(|n| n.contains(&ip))
                .map(|n| n.prefix_len())
                .max()
        };
        let allowed = longest(&self.allow);
        if !self.allow.is_empty() && allowed.is_none() {
            return false;
        }
        match (longest(&self.deny), allowed) {
            (None, _) => true,
            (Some(denied), Some(allowed)) => allowed > denied,
            (Some(_), None) => false,
        }
    }

    pub fn to_wire(&self) -> v1::BackendPolicy {
        v1::BackendPolicy {
            deny: self.deny.iter().map(ToString::to_string).collect(),
            allow: self.allow.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn from_wire(wire: &v1::BackendPolicy) -> Result<Self, PolicyError> {
        BackendPolicy::new(&wire.deny, &wire.allow)
    }
}

/// The clear error for a denied address.
pub fn not_allowed(ip: IpAddr) -> String {
    format!("backend not allowed: {ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_and_unspecified_addresses_are_denied_by_default() {
        let p = BackendPolicy::default();
        for denied in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "::ffff:169.254.169.254",
        ] {
            assert!(!p.allows(ip(denied)), "{denied}");
        }
        for allowed in ["127.0.0.1", "10.1.2.3", "::1", "192.0.2.7"] {
            assert!(p.allows(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn an_allow_list_restricts_and_a_narrower_allow_opens_a_denied_range() {
        let p = BackendPolicy::new(&DEFAULT_DENY, &["10.0.0.0/8", "169.254.7.0/24"]).unwrap();
        assert!(p.allows(ip("10.9.9.9")));
        assert!(!p.allows(ip("127.0.0.1")), "outside the allow list");
        assert!(p.allows(ip("169.254.7.1")), "the narrower allow wins");
        assert!(!p.allows(ip("169.254.169.254")));
        let p = BackendPolicy::new(&["10.0.0.0/8", "192.0.2.7"], &[] as &[&str]).unwrap();
        assert!(!p.allows(ip("192.0.2.7")) && p.allows(ip("192.0.2.8")));
        assert!(
            p.allows(ip("169.254.169.254")),
            "a deny list given replaces the default"
        );
    }

    #[test]
    fn bad_cidrs_are_named_and_the_wire_form_round_trips() {
        assert_eq!(
            BackendPolicy::new(&["10.0.0.0/33"], &[] as &[&str]),
            Err(PolicyError::Cidr("10.0.0.0/33".into()))
        );
        let p = BackendPolicy::new(&["10.0.0.0/8"], &["10.1.0.0/16"]).unwrap();
        assert_eq!(BackendPolicy::from_wire(&p.to_wire()).unwrap(), p);
    }
}
