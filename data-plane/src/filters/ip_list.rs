//! `ip_allow` and `ip_deny`: clients by network, looked up in O(log n);
//! deny wins, and with an allow list only its networks pass. 403 otherwise.

use portico_proto::ip_set::IpSet;

use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request};

pub struct IpList {
    pub allow: Option<IpSet>,
    pub deny: Option<IpSet>,
}

impl IpList {
    /// Whether a client at `ip` may pass; one without an address (a Unix
    /// socket) passes only when there is no allow list.
    pub fn admits(&self, ip: Option<std::net::IpAddr>) -> bool {
        let Some(ip) = ip else {
            return self.allow.is_none();
        };
        if self.deny.as_ref().is_some_and(|d| d.contains(ip)) {
            return false;
        }
        self.allow.as_ref().is_none_or(|a| a.contains(ip))
    }
}

impl Filter for IpList {
    fn on_request(&self, req: &Request<'_>, _: &mut Admission) -> Flow {
        if self.admits(req.client) {
            Flow::Next
        } else {
            Flow::Answer(Answer::text(403, "portico: forbidden\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &str, deny: &str) -> IpList {
        let set = |raw: &str| Some(IpSet::parse(raw).unwrap()).filter(|s| !s.is_empty());
        IpList {
            allow: set(allow),
            deny: set(deny),
        }
    }

    #[test]
    fn deny_wins_and_an_allow_list_admits_only_its_networks() {
        let ip = |s: &str| Some(s.parse().unwrap());
        let both = list("127.0.0.0/8,::1", "127.0.0.3");
        assert!(both.admits(ip("127.0.0.2")) && both.admits(ip("::1")));
        assert!(!both.admits(ip("127.0.0.3")) && !both.admits(ip("192.0.2.1")));
        assert!(!both.admits(None));
        let deny = list("", "2001:db8::/32");
        assert!(
            !deny.admits(ip("2001:db8::1")) && deny.admits(ip("2001:db9::1")) && deny.admits(None)
        );
    }
}
