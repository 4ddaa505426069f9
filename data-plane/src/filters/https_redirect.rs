//! `https_redirect`: plain-HTTP requests to a pool where any route asks for
//! it are answered `308` to the same host and target over https.

use std::borrow::Cow;

use crate::filters::acme_challenge::ACME_CHALLENGE;
use crate::pipeline::chain::{Admission, Answer, Filter, Flow, Request};

pub struct HttpsRedirect;

impl Filter for HttpsRedirect {
    fn on_request(&self, req: &Request<'_>, _: &mut Admission) -> Flow {
        // A challenge this data plane does not hold still goes to the route.
        if req.tls || req.head.uri.path().starts_with(ACME_CHALLENGE) {
            return Flow::Next;
        }
        let target = req.head.uri.path_and_query().map_or("/", |p| p.as_str());
        Flow::Answer(Answer::redirect(https_location(
            &req.host(),
            req.https_port,
            target,
        )))
    }
}

/// Where `https_redirect` sends a request for `host` and `target` (path and
/// query): the port is left out for 443, or when there is no TLS listener
/// here (TLS is then terminated in front, on the default port).
pub fn https_location(host: &str, https_port: Option<u16>, target: &str) -> String {
    let host = if host.contains(':') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    };
    match https_port {
        Some(port) if port != 443 => format!("https://{host}:{port}{target}"),
        _ => format!("https://{host}{target}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_name_the_tls_port_unless_it_is_443() {
        assert_eq!(
            https_location("a.test", Some(8443), "/p?q=1"),
            "https://a.test:8443/p?q=1"
        );
        assert_eq!(
            https_location("a.test", Some(443), "/p?q=1"),
            "https://a.test/p?q=1"
        );
        assert_eq!(https_location("a.test", None, "/"), "https://a.test/");
        assert_eq!(
            https_location("::1", Some(8443), "/"),
            "https://[::1]:8443/"
        );
    }
}
