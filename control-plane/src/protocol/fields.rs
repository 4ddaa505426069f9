//! The checks of single protocol fields: names, ports, metadata, routes,
//! targets, headers, options, durations, scopes. Each error names the field.

use std::time::Duration;

use portico_proto::model::{self, parse_domains, validate_path};
use portico_proto::BackendUrl;
use serde_json::{Map, Value};

use super::command::*;
use portico_proto::duration::parse_duration;

const MAX_NAME: usize = 128;
const MAX_METADATA: usize = 4096;
const MAX_BULK: usize = 1000;

pub(super) fn parse_name(field: &str, raw: &str) -> Result<String, String> {
    let ok = (1..=MAX_NAME).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "invalid {field} name \"{}\": use 1-128 of A-Z a-z 0-9 . _ -",
            clip(raw)
        ))
    }
}

pub(super) fn parse_port(raw: &str) -> Result<u16, String> {
    raw.parse::<u16>().map_err(|_| {
        format!(
            "invalid maintenance_port \"{}\": must be 0-65535",
            clip(raw)
        )
    })
}

pub(super) fn parse_metadata(raw: &str) -> Result<Map<String, Value>, String> {
    if raw.is_empty() {
        return Ok(Map::new());
    }
    if raw.len() > MAX_METADATA {
        return Err(format!(
            "invalid metadata: larger than {MAX_METADATA} bytes"
        ));
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("invalid metadata: must be a JSON object".into()),
        Err(e) => Err(format!("invalid metadata: {e}")),
    }
}

pub(super) fn parse_backend(raw: &str) -> Result<BackendUrl, String> {
    BackendUrl::parse(raw).map_err(|e| e.to_string())
}

pub(super) fn parse_priority(raw: &str) -> Result<i64, String> {
    if raw.is_empty() {
        return Ok(0);
    }
    raw.parse::<i64>()
        .ok()
        .filter(|p| p.unsigned_abs() <= 1_000_000_000)
        .ok_or_else(|| {
            format!(
                "invalid priority \"{}\": must be an integer between -1000000000 and 1000000000",
                clip(raw)
            )
        })
}

pub(super) fn parse_route(
    domains: &str,
    path: &str,
    backend: &str,
    priority: &str,
) -> Result<RouteInput, String> {
    let domains = parse_domains(domains).map_err(|e| e.to_string())?;
    validate_path(path).map_err(|e| e.to_string())?;
    Ok(RouteInput {
        domains,
        path: path.to_string(),
        backend: parse_backend(backend)?,
        priority: parse_priority(priority)?,
    })
}

pub(super) fn parse_bulk(raw: &str) -> Result<Vec<RouteInput>, String> {
    let items: Vec<Value> = match serde_json::from_str(raw) {
        Ok(Value::Array(items)) => items,
        Ok(_) => return Err("invalid json_array: must be a JSON array".into()),
        Err(e) => return Err(format!("invalid json_array: {e}")),
    };
    if items.is_empty() {
        return Err("invalid json_array: no routes".into());
    }
    if items.len() > MAX_BULK {
        return Err(format!("invalid json_array: more than {MAX_BULK} routes"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_bulk_item(item).map_err(|e| format!("item {i}: {e}")))
        .collect()
}

pub(super) fn parse_bulk_item(item: &Value) -> Result<RouteInput, String> {
    let obj = item.as_object().ok_or("must be a JSON object")?;
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "domains" | "path" | "backend_url" | "priority"))
    {
        return Err(format!("unknown field \"{}\"", clip(unknown)));
    }
    let domains = match obj.get("domains") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|d| d.as_str().ok_or("domains must be strings"))
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        Some(Value::String(s)) => s.clone(),
        _ => return Err("missing domains".into()),
    };
    let path = obj
        .get("path")
        .and_then(Value::as_str)
        .ok_or("missing path")?;
    let backend = obj
        .get("backend_url")
        .and_then(Value::as_str)
        .ok_or("missing backend_url")?;
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|p| p.unsigned_abs() <= 1_000_000_000)
            .ok_or("priority must be an integer between -1000000000 and 1000000000")?,
        Some(_) => return Err("priority must be an integer".into()),
    };
    parse_route(&domains, path, backend, &priority.to_string())
}

pub(super) fn parse_route_id(raw: &str) -> Result<RouteId, String> {
    model::parse_route_id(raw)
        .map(RouteId)
        .map_err(|_| format!("invalid route id \"{}\"", clip(raw)))
}

pub(super) fn parse_route_field(field: &str, value: &str) -> Result<RouteField, String> {
    match field.to_ascii_lowercase().as_str() {
        "backend_url" | "backend" => Ok(RouteField::BackendUrl(parse_backend(value)?)),
        "priority" => Ok(RouteField::Priority(parse_priority(value)?)),
        "domains" => Ok(RouteField::Domains(
            parse_domains(value).map_err(|e| e.to_string())?,
        )),
        "path" => {
            validate_path(value).map_err(|e| e.to_string())?;
            Ok(RouteField::Path(value.to_string()))
        }
        _ => Err(format!(
            "invalid field \"{}\": must be backend_url, priority, domains or path",
            clip(field)
        )),
    }
}

pub(super) fn parse_target(raw: &str) -> Result<Target, String> {
    if raw.eq_ignore_ascii_case("all") {
        return Ok(Target::All);
    }
    model::parse_route_id(raw)
        .map(|n| Target::Route(RouteId(n)))
        .map_err(|_| {
            format!(
                "invalid target \"{}\": must be ALL or a route id",
                clip(raw)
            )
        })
}

pub(super) fn parse_compressed(raw: &str) -> Result<bool, String> {
    match raw {
        "" => Ok(false),
        r if r.eq_ignore_ascii_case("compressed") => Ok(true),
        other => Err(format!(
            "invalid field \"{}\": expected \"compressed\" or nothing",
            clip(other)
        )),
    }
}

/// Header names a service may not set: they frame the response or the connection.
const FORBIDDEN_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn parse_header_name(raw: &str) -> Result<String, String> {
    let token = !raw.is_empty()
        && raw.len() <= 256
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("invalid header name \"{}\"", clip(raw)));
    }
    let lower = raw.to_ascii_lowercase();
    if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "invalid header name \"{raw}\": hop-by-hop and framing headers cannot be set"
        ));
    }
    Ok(raw.to_string())
}

pub(crate) fn parse_header_value(raw: &str) -> Result<String, String> {
    // Visible characters, spaces and tabs only: no CR, LF or other controls can
    // reach a response.
    let ok = raw.len() <= 4096 && raw.chars().all(|c| c == '\t' || !c.is_control());
    if ok {
        Ok(raw.trim().to_string())
    } else {
        Err("invalid header value: control characters are not allowed".into())
    }
}

pub(super) fn parse_option_key(raw: &str) -> Result<OptionKey, String> {
    OptionKey::from_name(raw).map_err(|e| e.to_string())
}

pub(super) fn parse_option_value(key: OptionKey, raw: &str) -> Result<OptionValue, String> {
    key.parse_value(raw).map_err(|e| e.to_string())
}

pub(super) fn parse_health(
    path: &str,
    interval: &str,
    timeout: &str,
) -> Result<HealthCheck, String> {
    validate_path(path).map_err(|e| e.to_string())?;
    let interval = parse_named_duration("interval", interval)?;
    let timeout = parse_named_duration("timeout", timeout)?;
    if timeout >= interval {
        return Err("invalid timeout: must be shorter than interval".into());
    }
    Ok(HealthCheck {
        path: path.to_string(),
        interval,
        timeout,
    })
}

pub(super) fn parse_named_duration(field: &str, raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| format!("invalid {field}: {e}"))
}

pub(super) fn parse_positive(field: &str, raw: &str) -> Result<u64, String> {
    raw.parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && *n <= 1_000_000_000)
        .ok_or_else(|| {
            format!(
                "invalid {field} \"{}\": must be a positive integer",
                clip(raw)
            )
        })
}

pub(super) fn parse_positive_u32(field: &str, raw: &str) -> Result<u32, String> {
    parse_positive(field, raw).and_then(|n| {
        u32::try_from(n)
            .ok()
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| format!("invalid {field} \"{raw}\": at most 1000000"))
    })
}

pub(super) fn parse_scopes(raw: &str) -> Result<Scopes, String> {
    let mut scopes = Scopes::default();
    for scope in raw.split(',').map(str::trim) {
        match scope.to_ascii_lowercase().as_str() {
            "routes" => scopes.routes = true,
            "headers" => scopes.headers = true,
            "options" => scopes.options = true,
            "health" => scopes.health = true,
            "ratelimit" => scopes.ratelimit = true,
            "circuit_breaker" => scopes.circuit_breaker = true,
            _ => {
                return Err(format!(
                    "invalid scope \"{}\": must be routes, headers, options, health, ratelimit or circuit_breaker",
                    clip(scope)
                ))
            }
        }
    }
    Ok(scopes)
}

pub(super) fn parse_stats(args: &[&str]) -> Result<Command, String> {
    let (target, compressed) = match args {
        [] => ("", ""),
        [one] if one.eq_ignore_ascii_case("compressed") => ("", *one),
        [one] => (*one, ""),
        [t, c, ..] => (*t, *c),
    };
    Ok(Command::StatsGet {
        target: if target.is_empty() {
            Target::All
        } else {
            parse_target(target)?
        },
        compressed: parse_compressed(compressed)?,
    })
}

pub(super) fn parse_maint_target(raw: &str) -> Result<MaintTarget, String> {
    if raw.is_empty() {
        return Err("invalid target: empty".into());
    }
    if raw.eq_ignore_ascii_case("all") {
        return Ok(MaintTarget::All);
    }
    if raw.starts_with('/') {
        validate_path(raw).map_err(|e| e.to_string())?;
        return Ok(MaintTarget::Path(raw.to_string()));
    }
    let ids: Result<Vec<RouteId>, _> = raw
        .split(',')
        .map(|id| model::parse_route_id(id.trim()).map(RouteId))
        .collect();
    if let Ok(ids) = ids {
        return Ok(MaintTarget::Routes(ids));
    }
    model::validate_domain(raw)
        .map(MaintTarget::Domain)
        .map_err(|_| {
            format!(
                "invalid target \"{}\": must be ALL, route ids, a path or a domain",
                clip(raw)
            )
        })
}

pub(super) fn parse_event(raw: &str) -> Result<EventType, String> {
    EventType::from_name(raw).ok_or_else(|| {
        format!(
            "invalid event type \"{}\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed, geo_blocked or all",
            clip(raw)
        )
    })
}

/// Keeps echoed input short in error messages.
pub(super) fn clip(raw: &str) -> String {
    raw.chars().take(80).collect()
}
