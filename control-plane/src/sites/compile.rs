//! A site file turned into what Portico serves: routes, headers and the
//! registry's settings, with a warning for every key or family Portico reads
//! but does not enforce yet. Pure: text in, `Site` out.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use portico_proto::settings::{BreakerSpec, HealthCheck, OptionKey, OptionValue, RateLimit};
use serde_json::{json, Map};
use serde_yaml_ng::Value;

use super::format::{self, FormatError, Options, SiteFile};
use crate::protocol::{RouteId, RouteInput, Target};
use crate::session::settings::Settings;
use crate::session::state::{Identity, Ops, SessionState};

/// How often and how patiently a site's health check probes when the file
/// names only its path.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// A breaker's defaults when the family leaves them out.
const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries the data planes make at most (the registry option's range).
const MAX_RETRIES: u32 = 5;

/// The key a site's routes are owned and stored by; it cannot collide with a
/// session's key (hex digits only) nor be reached by a `RECONNECT`.
pub fn site_key(name: &str) -> String {
    format!("{}{name}", crate::session::key::SITE_PREFIX)
}

/// One site, read and checked, ready to be given route ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    /// The file it came from (its name in the folder).
    pub file: String,
    pub enabled: bool,
    pub maintenance_port: u16,
    pub routes: Vec<SiteRoute>,
    /// Response headers on every route, by lower-case name: (name, value).
    pub headers: BTreeMap<String, (String, String)>,
    pub options: BTreeMap<OptionKey, OptionValue>,
    /// Probes every route's backend when set.
    pub health: Option<HealthCheck>,
    pub rate_limit: Option<RateLimit>,
    pub breaker: Option<BreakerSpec>,
    pub warnings: Vec<String>,
    /// Every option as it applies to the site (its own over the global
    /// defaults), kept with the site, also the families not enforced yet.
    pub carried: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteRoute {
    pub input: RouteInput,
    pub headers: BTreeMap<String, (String, String)>,
    pub websocket: bool,
}

/// Reads a site file over the global defaults' `options` (as written).
pub fn compile(file: &str, text: &str, default_options: &Value) -> Result<Site, FormatError> {
    let read = format::read::<SiteFile>(text, &["options"])?;
    let site = read.value;
    let mut warnings: Vec<String> = read
        .unknown
        .iter()
        .map(|k| format!("unknown key {k} (ignored)"))
        .collect();
    let service = site.service.as_ref();
    let name = service
        .and_then(|s| s.name.clone())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| FormatError("service.name is required".into()))?;
    if name.contains(char::is_whitespace) || name.len() > 128 {
        return Err(FormatError(format!(
            "service.name \"{name}\": at most 128 characters, no spaces"
        )));
    }
    let merged = format::merge_options(default_options, &read.options);
    let options = format::options_of(&merged)?;
    let carried = serde_json::to_value(&merged).unwrap_or(serde_json::Value::Null);
    let mut out = Site {
        name,
        file: file.to_string(),
        enabled: site.enabled.unwrap_or(true),
        maintenance_port: service.and_then(|s| s.maintenance_port).unwrap_or(0),
        routes: Vec::new(),
        headers: headers(site.headers.as_ref()),
        options: BTreeMap::new(),
        health: None,
        rate_limit: None,
        breaker: None,
        warnings: Vec::new(),
        carried,
    };
    map_options(&options, &mut out, &mut warnings)?;
    let mut seen = HashSet::new();
    for (i, route) in site.routes.iter().flatten().enumerate() {
        let domains: Vec<String> = route
            .domains
            .iter()
            .flatten()
            .map(|h| h.0.to_ascii_lowercase())
            .collect();
        if domains.is_empty() {
            return Err(FormatError(format!("routes[{i}]: domains is required")));
        }
        let backend = route
            .backend
            .clone()
            .ok_or_else(|| FormatError(format!("routes[{i}]: backend is required")))?
            .0;
        let path = route.path.clone().map_or_else(|| "/".to_string(), |p| p.0);
        let input = RouteInput {
            domains,
            path,
            backend,
            priority: 0,
        };
        if !seen.insert((
            input.domains.clone(),
            input.path.clone(),
            input.backend.clone(),
        )) {
            return Err(FormatError(format!(
                "routes[{i}]: the same domains, path and backend as an earlier route"
            )));
        }
        out.routes.push(SiteRoute {
            input,
            headers: headers(route.headers.as_ref()),
            websocket: route.websocket.unwrap_or(false),
        });
    }
    warnings.sort();
    warnings.dedup();
    out.warnings = warnings;
    Ok(out)
}

fn headers(map: Option<&format::Headers>) -> BTreeMap<String, (String, String)> {
    map.into_iter()
        .flat_map(|h| &h.0)
        .map(|(n, v)| (n.to_ascii_lowercase(), (n.clone(), v.clone())))
        .collect()
}

fn not_enforced(warnings: &mut Vec<String>, what: &str) {
    warnings.push(format!("options.{what}: read and kept, not enforced yet"));
}

/// Maps every option family onto the registry's settings; what has no
/// setting yet becomes a warning.
fn map_options(
    o: &Options,
    site: &mut Site,
    warnings: &mut Vec<String>,
) -> Result<(), FormatError> {
    let dur = |d: Duration| OptionValue::Duration(d);
    if let Some(t) = o.timeout {
        site.options.insert(OptionKey::Timeout, dur(t.0));
    }
    if let Some(t) = &o.timeouts {
        if let Some(c) = t.connect {
            site.options.insert(OptionKey::ConnectTimeout, dur(c.0));
        }
        for (set, key) in [(t.read, "read"), (t.write, "write"), (t.idle, "idle")] {
            if set.is_some() {
                not_enforced(warnings, &format!("timeouts.{key}"));
            }
        }
    }
    if let Some(i) = o.health_check_interval {
        site.options
            .insert(OptionKey::HealthCheckInterval, dur(i.0));
    }
    if let Some(t) = o.health_check_timeout {
        site.options.insert(OptionKey::HealthCheckTimeout, dur(t.0));
    }
    if let Some(path) = &o.health_check_path {
        site.health = Some(HealthCheck {
            path: path.clone(),
            interval: o.health_check_interval.map_or(HEALTH_INTERVAL, |d| d.0),
            timeout: o.health_check_timeout.map_or(HEALTH_TIMEOUT, |d| d.0),
        });
    }
    if o.max_body_size.is_some() {
        not_enforced(warnings, "max_body_size");
    }
    if let Some(c) = &o.compression {
        let (on, family) = c.on(|f| f.enabled);
        site.options
            .insert(OptionKey::Compression, OptionValue::Bool(on));
        if family.algorithms.is_some()
            || family.level.is_some()
            || family.min_size.is_some()
            || family.content_types.is_some()
        {
            not_enforced(
                warnings,
                "compression (algorithms, level, min_size, content_types)",
            );
        }
    }
    if let Some(w) = &o.websocket {
        let (on, family) = w.on(|f| f.enabled);
        site.options
            .insert(OptionKey::Websocket, OptionValue::Bool(on));
        if family.max_connections.is_some()
            || family.max_duration.is_some()
            || family.idle_timeout.is_some()
            || family.ping_interval.is_some()
        {
            not_enforced(
                warnings,
                "websocket (max_connections, max_duration, idle_timeout, ping_interval)",
            );
        }
    }
    if o.http2 == Some(false) {
        warnings.push(
            "options.http2: false is not enforced yet (HTTP/2 is offered to every client over TLS)"
                .into(),
        );
    }
    if o.http3 == Some(true) {
        not_enforced(warnings, "http3");
    }
    if let Some(b) = o
        .circuit_breaker
        .as_ref()
        .filter(|b| b.enabled != Some(false))
    {
        site.breaker = Some(BreakerSpec {
            threshold: b.failure_threshold.unwrap_or(BREAKER_THRESHOLD).max(1),
            timeout: b.timeout.map_or(BREAKER_TIMEOUT, |d| d.0),
            half_open_requests: b.success_threshold.unwrap_or(1).max(1),
        });
        if b.window.is_some() {
            warnings.push("options.circuit_breaker.window: not enforced yet (the breaker counts consecutive failures)".into());
        }
    }
    if let Some(r) = o.rate_limit.as_ref().filter(|r| r.enabled != Some(false)) {
        site.rate_limit = match (r.requests_per_min, r.requests_per_hour) {
            (Some(n), hour) => {
                if hour.is_some() {
                    not_enforced(
                        warnings,
                        "rate_limit.requests_per_hour (beside requests_per_min)",
                    );
                }
                Some(RateLimit {
                    requests: n,
                    window: Duration::from_secs(60),
                })
            }
            (None, Some(n)) => Some(RateLimit {
                requests: n,
                window: Duration::from_secs(3600),
            }),
            (None, None) => None,
        };
        for (set, key) in [
            (r.burst_size.is_some(), "burst_size"),
            (r.per_route == Some(true), "per_route"),
            (r.per_ip == Some(false), "per_ip: false"),
        ] {
            if set {
                not_enforced(warnings, &format!("rate_limit.{key}"));
            }
        }
        if let Some(list) = r.whitelist.as_ref().filter(|l| !l.is_empty()) {
            let nets = portico_proto::ip_set::IpSet::of(list.iter().map(|c| c.0).collect());
            site.options
                .insert(OptionKey::RatelimitExempt, OptionValue::Nets(nets));
        }
    }
    if let Some(r) = o.retry.as_ref().filter(|r| r.enabled != Some(false)) {
        let retries = r.max_attempts.map_or(1, |n| n.saturating_sub(1));
        if retries > MAX_RETRIES {
            warnings.push(format!(
                "options.retry.max_attempts: {} attempts asked, {} kept (at most {MAX_RETRIES} retries)",
                retries + 1,
                MAX_RETRIES + 1
            ));
        }
        site.options.insert(
            OptionKey::Retries,
            OptionValue::Count(retries.min(MAX_RETRIES) as u8),
        );
        if r.backoff.is_some()
            || r.initial_delay.is_some()
            || r.max_delay.is_some()
            || r.retry_on.is_some()
        {
            not_enforced(
                warnings,
                "retry (backoff, initial_delay, max_delay, retry_on)",
            );
        }
    }
    let families = [
        ("waf", o.waf.as_ref().map(|f| f.enabled)),
        ("retention", o.retention.as_ref().map(|f| f.enabled)),
        ("slow_request", o.slow_request.as_ref().map(|f| f.enabled)),
    ];
    for (name, enabled) in families {
        if matches!(enabled, Some(e) if e != Some(false)) {
            not_enforced(warnings, name);
        }
    }
    map_pii(o, site, warnings);
    if let Some(g) = o.geoip.as_ref().filter(|g| g.enabled != Some(false)) {
        match g.expected_countries.as_ref().filter(|c| !c.is_empty()) {
            Some(codes) => {
                match portico_proto::settings::OptionKey::GeoAllow.parse_value(&codes.join(",")) {
                    Ok(value) => {
                        site.options.insert(OptionKey::GeoAllow, value);
                    }
                    Err(e) => {
                        return Err(FormatError(format!(
                            "options.geoip.expected_countries: {e}"
                        )))
                    }
                }
            }
            None => {
                warnings.push("options.geoip: no expected_countries, so nothing is filtered".into())
            }
        }
        if g.database_path.is_some() {
            warnings.push(
                "options.geoip.database_path: the database is each data plane's --geoip-db".into(),
            );
        }
        if g.alert_on_unusual_country == Some(true) {
            not_enforced(warnings, "geoip.alert_on_unusual_country");
        }
        if g.cache_expiry_minutes.is_some() {
            warnings.push("options.geoip.cache_expiry_minutes: not needed (every lookup reads the database in memory)".into());
        }
    }
    if o.connection_pool.is_some() {
        not_enforced(warnings, "connection_pool");
    }
    if o.limits.is_some() {
        not_enforced(warnings, "limits");
    }
    Ok(())
}

/// `pii` (and the `strip_headers` / `mask_query_params` go-proxy files put
/// under `retention`) onto the `pii_*` options.
fn map_pii(o: &Options, site: &mut Site, warnings: &mut Vec<String>) {
    use format::{MaskIp, MaskIpv6};
    use portico_proto::settings::Names;
    let pii = o.pii.as_ref().filter(|p| p.enabled != Some(false));
    let retention = o.retention.as_ref();
    let names = |list: Option<&Vec<String>>| {
        list.filter(|l| !l.is_empty())
            .and_then(|l| Names::parse(&l.join(",")).ok())
    };
    let strip = pii
        .and_then(|p| names(p.strip_headers.as_ref()))
        .or_else(|| retention.and_then(|r| names(r.strip_headers.as_ref())));
    let mask = pii
        .and_then(|p| names(p.mask_query_params.as_ref()))
        .or_else(|| retention.and_then(|r| names(r.mask_query_params.as_ref())));
    if let Some(n) = strip {
        site.options
            .insert(OptionKey::PiiStripHeaders, OptionValue::Names(n));
    }
    if let Some(n) = mask {
        site.options
            .insert(OptionKey::PiiMaskQuery, OptionValue::Names(n));
    }
    let Some(pii) = pii else {
        return;
    };
    let v4 = pii.mask_ip_method.map(|m| match m {
        MaskIp::LastOctet => "last_octet",
        MaskIp::Hash => "hash",
        MaskIp::Full => "full",
    });
    let v6 = pii.mask_ipv6_method.map(|m| match m {
        MaskIpv6::Last64 => "last_octet",
        MaskIpv6::Hash => "hash",
        MaskIpv6::Full => "full",
    });
    if let (Some(a), Some(b)) = (v4, v6) {
        if a != b {
            warnings.push(format!(
                "options.pii: one method masks both IPv4 and IPv6 addresses; {} is used for both",
                if a == "last_octet" {
                    "last_octet (IPv6: the last 64 bits)"
                } else {
                    a
                }
            ));
        }
    }
    if let Some(method) = v4.or(v6) {
        site.options
            .insert(OptionKey::PiiIp, OptionValue::Word(method));
    }
    if let Some(keep) = pii.preserve_localhost {
        site.options
            .insert(OptionKey::PiiPreservePrivate, OptionValue::Bool(keep));
    }
}

impl Site {
    /// The site as a session's state, its routes under `ids` (one per
    /// route, in order): what is stored, committed and pushed.
    pub fn state(&self, ids: &[RouteId]) -> SessionState {
        let mut metadata = Map::new();
        metadata.insert("site_file".into(), json!(self.file));
        if !self.carried.is_null() {
            metadata.insert("site_options".into(), self.carried.clone());
        }
        let mut state = SessionState::new(Identity {
            id: site_key(&self.name),
            service: self.name.clone(),
            instance: self.name.clone(),
            maintenance_port: self.maintenance_port,
            metadata,
            peer_ip: None,
            connected_at: SystemTime::UNIX_EPOCH,
            token: None,
        });
        let mut settings = Settings::default();
        if !self.headers.is_empty() {
            settings
                .headers
                .active
                .insert(Target::All, self.headers.clone());
        }
        if !self.options.is_empty() {
            settings
                .options
                .active
                .insert(Target::All, self.options.clone());
        }
        if let Some(r) = self.rate_limit {
            settings.ratelimit.active.insert(Target::All, r);
        }
        if let Some(b) = self.breaker {
            settings.breaker.active.insert(Target::All, b);
        }
        let mut routes = BTreeMap::new();
        if self.enabled {
            for (route, id) in self.routes.iter().zip(ids) {
                routes.insert(*id, route.input.clone());
                if !route.headers.is_empty() {
                    settings
                        .headers
                        .active
                        .insert(Target::Route(*id), route.headers.clone());
                }
                if route.websocket {
                    settings
                        .options
                        .active
                        .entry(Target::Route(*id))
                        .or_default()
                        .insert(OptionKey::Websocket, OptionValue::Bool(true));
                }
                if let Some(h) = &self.health {
                    settings.health.active.insert(*id, h.clone());
                }
            }
        }
        state.restore_active(routes, settings, Ops::default(), None);
        state
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
