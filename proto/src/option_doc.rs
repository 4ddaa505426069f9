//! What each route option is, for people: its values, default, meaning and
//! site-file spelling; `docs/reference/options.md` is generated from these.

use crate::settings::{OptionKey, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT, MAX_RETRIES};

/// One option described.
#[derive(Debug, Clone)]
pub struct OptionDoc {
    /// The kind of value and its limits.
    pub value: String,
    /// What a route that does not set it gets.
    pub default: String,
    pub meaning: &'static str,
    /// Its spelling in a go-proxy site file (`SITES.md`), if it has one,
    /// as Markdown.
    pub site_key: Option<&'static str>,
    /// A value it refuses, to show the error.
    pub bad_example: &'static str,
}

impl OptionKey {
    pub fn doc(self) -> OptionDoc {
        const DURATION: &str = "duration (`500ms`, `30s`, `1m`, `1h30m`, bare seconds), above zero";
        const BOOL: &str = "`true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`)";
        const COUNTRIES: &str =
            "ISO 3166-1 alpha-2 country codes, comma-separated (`DE,FR`), any case";
        const NAMES: &str = "names, comma-separated, matched without regard to case";
        const NETS: &str = "CIDRs and addresses, IPv4 and IPv6, comma-separated (`10.0.0.0/8,2001:db8::/32,192.0.2.7`); empty is no list";
        let (value, default, meaning, site_key) = match self {
            OptionKey::Timeout => (
                DURATION,
                "none",
                "longest wait for the backend's response (each read); 504 after it",
                Some("`options.timeout`"),
            ),
            OptionKey::ConnectTimeout => (
                DURATION,
                "the system's",
                "longest wait for a backend connection",
                Some("`options.timeouts.connect`"),
            ),
            OptionKey::Websocket => (
                BOOL,
                "`false`",
                "WebSocket upgrades pass to the backend",
                Some("`options.websocket`, or a route's `websocket`"),
            ),
            OptionKey::Compression => (
                BOOL,
                "`false`",
                "gzip responses for clients that accept it",
                Some("`options.compression`"),
            ),
            OptionKey::Http2 => (
                BOOL,
                "`false`",
                "HTTP/2 to the backend",
                Some("an `h2c://` or `grpc://` backend URL"),
            ),
            OptionKey::Retries => (
                &*format!("integer 0 to {MAX_RETRIES}"),
                "`0`",
                "idempotent requests whose backend attempt failed are tried again, on another backend of the pool",
                Some("`options.retry.max_attempts`"),
            ),
            OptionKey::HealthCheckInterval => (
                DURATION,
                &*format!("`{}s`", DEFAULT_PROBE_INTERVAL.as_secs()),
                "how often the route's backend is probed (without HEALTH_SET)",
                Some("`options.health_check_interval`"),
            ),
            OptionKey::HealthCheckTimeout => (
                DURATION,
                &*format!("`{}s`", DEFAULT_PROBE_TIMEOUT.as_secs()),
                "a probe without an answer this long fails (without HEALTH_SET)",
                Some("`options.health_check_timeout`"),
            ),
            OptionKey::HttpsRedirect => (
                BOOL,
                "`false`",
                "plain-HTTP requests are answered 308 to the same URL on https",
                None,
            ),
            OptionKey::IpAllow => (
                NETS,
                "none: every address",
                "only clients in these networks pass; others get 403 (the client is the connection's address, or the one trusted proxies name: `portico-dp --trusted-proxies`)",
                None,
            ),
            OptionKey::PiiIp => (
                "`none`, `last_octet`, `hash` or `full`",
                "`none`: the address as it is",
                "how the access log keeps the client's address: `last_octet` zeroes the last IPv4 octet (`203.0.113.0`) or the last 64 bits of IPv6, `hash` writes a keyed HMAC-SHA-256 (`portico-dp --pii-key-file`), `full` writes `***`; the backend still gets the real address",
                Some("`options.pii.mask_ip_method` / `mask_ipv6_method`"),
            ),
            OptionKey::PiiStripHeaders => (
                NAMES,
                "none",
                "header names never logged (the access log keeps no header today; the list holds for what later logs)",
                Some("`options.pii.strip_headers`"),
            ),
            OptionKey::PiiMaskQuery => (
                NAMES,
                "none",
                "query parameters whose values the access log writes as `***`",
                Some("`options.pii.mask_query_params`"),
            ),
            OptionKey::PiiPreservePrivate => (
                BOOL,
                "`false`",
                "loopback and private addresses are logged as they are, whatever `pii_ip` says",
                Some("`options.pii.preserve_localhost`"),
            ),
            OptionKey::RatelimitExempt => (
                NETS,
                "none",
                "clients in these networks are not rate-limited",
                Some("`options.rate_limit.whitelist`"),
            ),
            OptionKey::GeoAllow => (
                COUNTRIES,
                "none: every country",
                "only clients from these countries pass (by `portico-dp --geoip-db`); others get 403",
                Some("`options.geoip.expected_countries`"),
            ),
            OptionKey::GeoDeny => (
                COUNTRIES,
                "none",
                "clients from these countries get 403; deny wins over `geo_allow`",
                None,
            ),
            OptionKey::StripPrefix => (
                BOOL,
                "`false`",
                "the route's path prefix is removed before the backend sees the path (`/api/x` becomes `/x` on a route of `/api`)",
                None,
            ),
            OptionKey::AddPrefix => (
                "a path (`/v1`)",
                "none",
                "put before the path the backend sees (after `strip_prefix`): `/x` becomes `/v1/x`",
                None,
            ),
            OptionKey::PreserveHost => (
                BOOL,
                "`true`",
                "the backend gets the client's `Host`; `false`: the backend URL's host and port",
                None,
            ),
            OptionKey::GeoUnknown => (
                "`allow` or `deny`",
                "`allow`",
                "what a client the GeoIP database does not know gets, on a route with `geo_allow` or `geo_deny`",
                None,
            ),
            OptionKey::IpDeny => (
                NETS,
                "none",
                "clients in these networks get 403; deny wins over `ip_allow`",
                None,
            ),
        };
        let bad_example = match self {
            OptionKey::Retries => "9",
            OptionKey::Websocket
            | OptionKey::Compression
            | OptionKey::Http2
            | OptionKey::HttpsRedirect
            | OptionKey::PiiPreservePrivate
            | OptionKey::StripPrefix
            | OptionKey::PreserveHost => "maybe",
            OptionKey::AddPrefix => "v1",
            OptionKey::PiiIp => "scramble",
            OptionKey::PiiStripHeaders | OptionKey::PiiMaskQuery => "a b",
            OptionKey::IpAllow | OptionKey::IpDeny | OptionKey::RatelimitExempt => "10.0.0.0/33",
            OptionKey::GeoAllow | OptionKey::GeoDeny => "Germany",
            OptionKey::GeoUnknown => "maybe",
            _ => "0s",
        };
        OptionDoc {
            value: value.to_string(),
            default: default.to_string(),
            meaning,
            site_key,
            bad_example,
        }
    }
}
