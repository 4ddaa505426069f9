//! The site-file format (`../shared/SITES.md`, go-proxy's) as typed values:
//! a site file and `global.yaml`, read with the line of any error and the
//! keys this build does not know listed rather than dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use portico_proto::BackendUrl;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// Why a file cannot be read; the text names the line where the parser knows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// A file as read: its typed content, its `options` as written (merged over
/// the global defaults before they are typed again), and the unknown keys.
#[derive(Debug, Clone)]
pub struct Read<T> {
    pub value: T,
    pub options: Value,
    pub unknown: Vec<String>,
}

/// Reads `text` as a `T`, listing every key `T` does not have.
pub fn read<T: for<'de> Deserialize<'de>>(
    text: &str,
    options_at: &[&str],
) -> Result<Read<T>, FormatError> {
    let raw: Value = serde_yaml_ng::from_str(text).map_err(|e| FormatError(e.to_string()))?;
    // An empty file (or one of comments only) is an empty map.
    let text = if raw.is_null() { "{}" } else { text };
    let mut unknown = Vec::new();
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let value: T = serde_ignored::deserialize(de, |path| unknown.push(key_path(&path)))
        .map_err(|e| FormatError(e.to_string()))?;
    let options = options_at
        .iter()
        .try_fold(&raw, |v, key| v.get(key))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Read {
        value,
        options,
        unknown,
    })
}

/// A key's place as SITES.md writes it: `routes[0].weight`.
fn key_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => key.to_string(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// `options` of the defaults with a site's on top, key by key; a family
/// written as a map in both is merged the same way, one written as a bool
/// in either is the site's as written.
pub fn merge_options(defaults: &Value, site: &Value) -> Value {
    match (defaults, site) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            let mut out = d.clone();
            for (k, v) in s {
                let merged = match d.get(k) {
                    Some(dv) if !v.is_null() => merge_options(dv, v),
                    Some(dv) => dv.clone(),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Mapping(out)
        }
        (d, Value::Null) => d.clone(),
        (_, s) => s.clone(),
    }
}

/// Typed options from a merged `options` value (each part already read,
/// so only a bool and a map of one family can meet here).
pub fn options_of(merged: &Value) -> Result<Options, FormatError> {
    if merged.is_null() {
        return Ok(Options::default());
    }
    Options::deserialize(merged.clone()).map_err(|e| FormatError(format!("options: {e}")))
}

/// One site: `sites-available/<anything>.yaml`.
#[derive(Debug, Clone, Deserialize)]
pub struct SiteFile {
    pub enabled: Option<bool>,
    pub service: Option<Service>,
    pub routes: Option<Vec<RouteEntry>>,
    pub headers: Option<Headers>,
    pub options: Option<Options>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    pub name: Option<String>,
    pub maintenance_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteEntry {
    pub domains: Option<Vec<Host>>,
    pub path: Option<PathPrefix>,
    pub backend: Option<Backend>,
    pub websocket: Option<bool>,
    pub headers: Option<Headers>,
}

/// Response headers, checked as `HEADERS_SET` checks them; a number or
/// bool value is its text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::protocol::fields::{parse_header_name, parse_header_value};
        let raw = BTreeMap::<String, Text>::deserialize(d)?;
        raw.into_iter()
            .map(|(name, value)| {
                let name = parse_header_name(&name).map_err(de::Error::custom)?;
                let value = parse_header_value(&value.0)
                    .map_err(|e| de::Error::custom(format!("header {name}: {e}")))?;
                Ok((name, value))
            })
            .collect::<Result<_, _>>()
            .map(Headers)
    }
}

/// `global.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GlobalFile {
    pub defaults: Option<Defaults>,
    pub blackhole: Option<Blackhole>,
    pub tls: Option<Tls>,
    pub webhook: Option<Webhook>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Defaults {
    pub headers: Option<Headers>,
    pub options: Option<Options>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Blackhole {
    pub unknown_domains: Option<bool>,
    pub metrics_only: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tls {
    pub certificates: Option<Vec<CertificateEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CertificateEntry {
    pub domains: Option<Vec<String>>,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Webhook {
    pub url: Option<String>,
    pub enabled: Option<bool>,
}

/// `options:` of a site and `defaults.options` of global.yaml.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Options {
    pub timeout: Option<Dur>,
    pub health_check_path: Option<String>,
    pub health_check_interval: Option<Dur>,
    pub health_check_timeout: Option<Dur>,
    pub max_body_size: Option<Size>,
    pub compression: Option<Toggle<Compression>>,
    pub websocket: Option<Toggle<WebsocketLimits>>,
    pub http2: Option<bool>,
    pub http3: Option<bool>,
    pub timeouts: Option<Timeouts>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub rate_limit: Option<RateLimit>,
    pub waf: Option<Waf>,
    pub pii: Option<Pii>,
    pub geoip: Option<Geoip>,
    pub retention: Option<Retention>,
    pub connection_pool: Option<ConnectionPool>,
    pub retry: Option<Retry>,
    pub slow_request: Option<SlowRequest>,
    pub limits: Option<Limits>,
}

/// A family that may be written as a bool (`compression: true`) or a map.
#[derive(Debug, Clone)]
pub enum Toggle<T> {
    Flag(bool),
    Family(T),
}

impl<T: Default + Clone + for<'a> Deserialize<'a>> Toggle<T> {
    /// Whether it is on, with the family's details (defaults for a bool).
    pub fn on(&self, enabled: impl Fn(&T) -> Option<bool>) -> (bool, T) {
        match self {
            Toggle::Flag(on) => (*on, T::default()),
            Toggle::Family(f) => (enabled(f).unwrap_or(true), f.clone()),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Toggle<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visit<T> {
            type Value = Toggle<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a map")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Toggle<T>, E> {
                Ok(Toggle::Flag(v))
            }
            fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<Toggle<T>, M::Error> {
                // Read in place, so unknown keys and lines are still reported.
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Toggle::Family)
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Compression {
    pub enabled: Option<bool>,
    pub algorithms: Option<Vec<String>>,
    pub level: Option<i64>,
    pub min_size: Option<Size>,
    pub content_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WebsocketLimits {
    pub enabled: Option<bool>,
    pub max_connections: Option<u64>,
    pub max_duration: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub ping_interval: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Timeouts {
    pub connect: Option<Dur>,
    pub read: Option<Dur>,
    pub write: Option<Dur>,
    pub idle: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CircuitBreaker {
    pub enabled: Option<bool>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    pub timeout: Option<Dur>,
    pub window: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RateLimit {
    pub enabled: Option<bool>,
    pub requests_per_min: Option<u64>,
    pub requests_per_hour: Option<u64>,
    pub burst_size: Option<u64>,
    pub per_ip: Option<bool>,
    pub per_route: Option<bool>,
    pub whitelist: Option<Vec<Cidr>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Waf {
    pub enabled: Option<bool>,
    pub block_mode: Option<bool>,
    pub sensitivity: Option<Sensitivity>,
    pub check_path: Option<bool>,
    pub check_headers: Option<bool>,
    pub check_query: Option<bool>,
    pub check_body: Option<bool>,
    pub max_body_size: Option<Size>,
    pub whitelist: Option<Vec<Cidr>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pii {
    pub enabled: Option<bool>,
    pub mask_ip_method: Option<MaskIp>,
    pub mask_ipv6_method: Option<MaskIpv6>,
    pub strip_headers: Option<Vec<String>>,
    pub mask_query_params: Option<Vec<String>>,
    pub preserve_localhost: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskIp {
    LastOctet,
    Hash,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskIpv6 {
    #[serde(rename = "last_64")]
    Last64,
    Hash,
    Full,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Geoip {
    pub enabled: Option<bool>,
    pub database_path: Option<String>,
    pub expected_countries: Option<Vec<String>>,
    pub alert_on_unusual_country: Option<bool>,
    pub cache_expiry_minutes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Retention {
    pub enabled: Option<bool>,
    pub policy_type: Option<RetentionPolicy>,
    pub access_log_days: Option<u32>,
    pub security_log_days: Option<u32>,
    pub audit_log_days: Option<u32>,
    pub metrics_days: Option<u32>,
    pub health_check_days: Option<u32>,
    pub websocket_log_days: Option<u32>,
    /// go-proxy files put these here too: read as `pii`'s.
    pub strip_headers: Option<Vec<String>>,
    pub mask_query_params: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionPolicy {
    Public,
    Private,
    Custom,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectionPool {
    pub max_idle_conns: Option<u64>,
    pub max_idle_conns_per_host: Option<u64>,
    pub max_conns_per_host: Option<u64>,
    pub idle_timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Retry {
    pub enabled: Option<bool>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<Backoff>,
    pub initial_delay: Option<Dur>,
    pub max_delay: Option<Dur>,
    pub retry_on: Option<Vec<Text>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    Exponential,
    Linear,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlowRequest {
    pub enabled: Option<bool>,
    pub warning: Option<Dur>,
    pub critical: Option<Dur>,
    pub timeout: Option<Dur>,
    pub alert_webhook: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Limits {
    pub max_request_body: Option<Size>,
    pub max_response_body: Option<Size>,
}

/// A duration with a unit (`500ms`, `5s`, `2m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Text::deserialize(d)?.0;
        portico_proto::duration::parse_duration(&raw)
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

/// Bytes: a plain integer, or a number with `K`, `M` or `G` (powers of 1,024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(raw: &str) -> Result<Size, String> {
        let raw = raw.trim();
        let (digits, shift) = match raw.as_bytes().last() {
            Some(b'K' | b'k') => (&raw[..raw.len() - 1], 10),
            Some(b'M' | b'm') => (&raw[..raw.len() - 1], 20),
            Some(b'G' | b'g') => (&raw[..raw.len() - 1], 30),
            _ => (raw, 0),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1u64 << shift))
            .map(Size)
            .ok_or_else(|| format!("invalid size \"{raw}\": bytes, or a number with K, M or G"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Size::parse(&Text::deserialize(d)?.0).map_err(de::Error::custom)
    }
}

/// A network; a single address is its own /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let net = match raw.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => raw
                .parse::<std::net::IpAddr>()
                .map(IpNet::from)
                .map_err(|_| de::Error::custom(format!("invalid CIDR or address \"{raw}\"")))?,
        };
        Ok(Cidr(net))
    }
}

/// A host a route serves, checked as the registry checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(pub String);

impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        portico_proto::model::validate_domain(&raw)
            .map(Host)
            .map_err(de::Error::custom)
    }
}

/// A route's path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(pub String);

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        portico_proto::model::validate_path(&raw).map_err(de::Error::custom)?;
        Ok(PathPrefix(raw))
    }
}

/// A backend URL as Portico serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend(pub BackendUrl);

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if let Some((scheme @ ("h2c" | "grpc"), _)) = raw.split_once("://") {
            return Err(de::Error::custom(format!(
                "backend {raw}: {scheme}:// (HTTP/2 without TLS) is not supported yet"
            )));
        }
        BackendUrl::parse(&raw)
            .map(Backend)
            .map_err(de::Error::custom)
    }
}

/// A scalar as text: go-proxy's maps of strings take `1` and `true` too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            Value::Bool(b) => Ok(Text(b.to_string())),
            other => Err(de::Error::custom(format!(
                "expected a string, found {}",
                kind(&other)
            ))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}
