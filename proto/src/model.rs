//! Validated route fields shared by both planes: host names, path prefixes,
//! backend urls and route ids.

use std::fmt;

/// Why a route field was refused. Messages are lower case and name the value,
/// because the control plane sends them to services verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("invalid backend url \"{url}\": {reason}")]
    BackendUrl { url: String, reason: &'static str },
    #[error("invalid domain \"{domain}\": {reason}")]
    Domain {
        domain: String,
        reason: &'static str,
    },
    #[error("invalid path \"{path}\": {reason}")]
    Path { path: String, reason: &'static str },
    #[error("invalid route id \"{0}\"")]
    RouteId(String),
    #[error("route {route_id}: missing {field}")]
    Missing {
        route_id: String,
        field: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    Ws,
    Wss,
}

impl Scheme {
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Wss)
    }

    fn default_port(self) -> u16 {
        if self.is_tls() {
            443
        } else {
            80
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// A backend address: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Whether the port was written out; kept so the url prints as given.
    explicit_port: bool,
}

impl BackendUrl {
    pub fn parse(raw: &str) -> Result<Self, ModelError> {
        let err = |reason| ModelError::BackendUrl {
            url: raw.to_string(),
            reason,
        };
        if raw.is_empty() {
            return Err(err("empty"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace or control characters"));
        }
        let parsed = url::Url::parse(raw).map_err(|_| err("not a url"))?;
        let scheme = match parsed.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(err("scheme must be http, https, ws or wss")),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(err("user info is not allowed"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(err("query and fragment are not allowed"));
        }
        if !matches!(parsed.path(), "" | "/") {
            return Err(err("a path is not allowed"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(err("missing host")),
        };
        let explicit_port = parsed.port().is_some();
        let port = parsed.port().unwrap_or(scheme.default_port());
        if port == 0 {
            return Err(err("port must be 1-65535"));
        }
        Ok(BackendUrl {
            scheme,
            host,
            port,
            explicit_port,
        })
    }

    /// `host:port` suitable for a socket address lookup.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.explicit_port {
            write!(f, "{}://{}:{}", self.scheme.as_str(), host, self.port)
        } else {
            write!(f, "{}://{}", self.scheme.as_str(), host)
        }
    }
}

/// Parses a comma-separated host list into lower-cased, checked names.
pub fn parse_domains(raw: &str) -> Result<Vec<String>, ModelError> {
    raw.split(',').map(|d| validate_domain(d.trim())).collect()
}

/// Checks one host name: letters, digits and `-` in labels of 1-63, at most
/// 253 bytes, no port; `*.` is allowed only as the whole first label.
pub fn validate_domain(raw: &str) -> Result<String, ModelError> {
    let err = |reason| ModelError::Domain {
        domain: raw.to_string(),
        reason,
    };
    if raw.is_empty() {
        return Err(err("empty entry"));
    }
    if raw.contains(':') {
        return Err(err("ports are not allowed"));
    }
    if raw.len() > 253 {
        return Err(err("longer than 253 bytes"));
    }
    let lower = raw.to_ascii_lowercase();
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    if rest.is_empty() {
        return Err(err("a wildcard needs a domain after it"));
    }
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(err("labels must be 1-63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err("only letters, digits, '-' and '_' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(err("labels cannot start or end with '-'"));
        }
    }
    Ok(lower)
}

/// Checks a path prefix: starts with `/`, visible ASCII, no query or fragment.
pub fn validate_path(raw: &str) -> Result<(), ModelError> {
    let err = |reason| ModelError::Path {
        path: raw.to_string(),
        reason,
    };
    if !raw.starts_with('/') {
        return Err(err("must start with /"));
    }
    if raw.len() > 1024 {
        return Err(err("longer than 1024 bytes"));
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("only visible ascii characters are allowed"));
    }
    if raw.contains('?') || raw.contains('#') {
        return Err(err("query and fragment are not allowed"));
    }
    Ok(())
}

/// The prefix a path matches with: trailing slashes dropped, so `/api/`
/// and `/api` both match `/api`, `/api/` and `/api/v1`; `/` becomes empty.
pub fn match_prefix(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// Whether `request_path` falls under `prefix` (from [`match_prefix`]) on a
/// segment boundary: `/api` matches `/api` and `/api/x`, not `/apiary`.
pub fn prefix_matches(prefix: &str, request_path: &str) -> bool {
    match request_path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

/// Checks a route id of the form `r<digits>` and returns the number.
pub fn parse_route_id(raw: &str) -> Result<u64, ModelError> {
    raw.strip_prefix('r')
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ModelError::RouteId(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        let ok = BackendUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(ok.authority(), "127.0.0.1:8080");
        assert_eq!(ok.to_string(), "http://127.0.0.1:8080");
        let wss = BackendUrl::parse("wss://svc.local").unwrap();
        assert_eq!((wss.port, wss.scheme.is_tls()), (443, true));
        assert_eq!(wss.to_string(), "wss://svc.local");
        let v6 = BackendUrl::parse("http://[::1]:81").unwrap();
        assert_eq!(v6.authority(), "[::1]:81");
        for bad in [
            "ftp://x",
            "http://user:pw@x",
            "http://x/path",
            "http://",
            "x:80",
            "",
            "http://x:0",
            "http://x:99999",
            "http://x?q=1",
            "http:// x",
        ] {
            assert!(BackendUrl::parse(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            BackendUrl::parse("ftp://x").unwrap_err().to_string(),
            "invalid backend url \"ftp://x\": scheme must be http, https, ws or wss"
        );
    }

    #[test]
    fn domains() {
        assert_eq!(
            parse_domains("Example.COM,*.api.example.com").unwrap(),
            vec!["example.com", "*.api.example.com"]
        );
        for bad in [
            "", "a,,b", "a.com:80", "*.", "*", "a..b", "-a.com", "a b", "a.*.com",
        ] {
            assert!(parse_domains(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn paths_match_on_segment_boundaries() {
        let p = match_prefix("/api");
        assert!(prefix_matches(p, "/api"));
        assert!(prefix_matches(p, "/api/"));
        assert!(prefix_matches(p, "/api/v1"));
        assert!(!prefix_matches(p, "/apiary"));
        assert!(!prefix_matches(p, "/"));
        assert!(prefix_matches(match_prefix("/api/"), "/api"));
        let root = match_prefix("/");
        assert!(prefix_matches(root, "/"));
        assert!(prefix_matches(root, "/anything/at/all"));
        assert!(validate_path("api").is_err());
        assert!(validate_path("/a b").is_err());
        assert!(validate_path("/a?b").is_err());
    }

    #[test]
    fn route_ids() {
        assert_eq!(parse_route_id("r12"), Ok(12));
        for bad in ["r", "12", "rx", "r1a", "R1", "r-1"] {
            assert!(parse_route_id(bad).is_err(), "{bad}");
        }
    }
}
