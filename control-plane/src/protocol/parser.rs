//! The pure registry-protocol parser: one line in, a typed [`Request`] out.
//! No I/O and no state, so every rule here is table-tested.

use super::command::*;
use super::fields::*;

/// A line that cannot become a command; `txn` is echoed in the error reply.
/// The message names the field and the rule, in the protocol's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub txn: Option<String>,
    pub message: String,
}

/// One protocol command: its name, the fields after the name, how many
/// (at least, at most), whether the first names a session, and how the
/// fields after the session become a typed [`Command`]. Parsing, the
/// names and the usage messages all come from this one table.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    usage: &'static str,
    fields: (usize, usize),
    session: bool,
    parse: fn(&[&str]) -> Result<Command, String>,
}

/// Field `i` after the session id; empty when an optional field is absent.
fn arg<'a>(args: &[&'a str], i: usize) -> &'a str {
    args.get(i).copied().unwrap_or("")
}

const fn spec(
    name: &'static str,
    usage: &'static str,
    fields: (usize, usize),
    session: bool,
    parse: fn(&[&str]) -> Result<Command, String>,
) -> Spec {
    Spec {
        name,
        usage,
        fields,
        session,
        parse,
    }
}

/// Every command, in the order PROTOCOL.md lists them.
static COMMANDS: &[Spec] = &[
    spec(
        "REGISTER",
        "service|instance|maintenance_port|metadata_json",
        (3, 4),
        false,
        |a| {
            Ok(Command::Register {
                service: parse_name("service", arg(a, 0))?,
                instance: parse_name("instance", arg(a, 1))?,
                maintenance_port: parse_port(arg(a, 2))?,
                metadata: parse_metadata(arg(a, 3))?,
            })
        },
    ),
    spec("RECONNECT", "session", (1, 1), true, |_| {
        Ok(Command::Reconnect)
    }),
    spec("PING", "session", (1, 1), true, |_| Ok(Command::Ping)),
    spec("SESSION_INFO", "session", (1, 1), true, |_| {
        Ok(Command::SessionInfo)
    }),
    spec("CLIENT_SHUTDOWN", "session", (1, 1), true, |_| {
        Ok(Command::ClientShutdown)
    }),
    spec(
        "ROUTE_ADD",
        "session|domains|path|backend_url|priority",
        (4, 5),
        true,
        |a| {
            Ok(Command::RouteAdd(parse_route(
                arg(a, 0),
                arg(a, 1),
                arg(a, 2),
                arg(a, 3),
            )?))
        },
    ),
    spec("ROUTE_ADD_BULK", "session|json_array", (2, 2), true, |a| {
        Ok(Command::RouteAddBulk(parse_bulk(arg(a, 0))?))
    }),
    spec(
        "ROUTE_UPDATE",
        "session|route_id|field|value",
        (4, 4),
        true,
        |a| {
            Ok(Command::RouteUpdate {
                route: parse_route_id(arg(a, 0))?,
                field: parse_route_field(arg(a, 1), arg(a, 2))?,
            })
        },
    ),
    spec("ROUTE_REMOVE", "session|route_id", (2, 2), true, |a| {
        Ok(Command::RouteRemove(parse_route_id(arg(a, 0))?))
    }),
    spec("ROUTE_LIST", "session|compressed", (1, 2), true, |a| {
        Ok(Command::RouteList {
            compressed: parse_compressed(arg(a, 0))?,
        })
    }),
    spec(
        "HEADERS_SET",
        "session|target|name|value",
        (4, 4),
        true,
        |a| {
            Ok(Command::HeadersSet {
                target: parse_target(arg(a, 0))?,
                name: parse_header_name(arg(a, 1))?,
                value: parse_header_value(arg(a, 2))?,
            })
        },
    ),
    spec("HEADERS_REMOVE", "session|target|name", (3, 3), true, |a| {
        Ok(Command::HeadersRemove {
            target: parse_target(arg(a, 0))?,
            name: parse_header_name(arg(a, 1))?,
        })
    }),
    spec(
        "OPTIONS_SET",
        "session|target|key|value",
        (4, 4),
        true,
        |a| {
            let key = parse_option_key(arg(a, 1))?;
            Ok(Command::OptionsSet {
                target: parse_target(arg(a, 0))?,
                key,
                value: parse_option_value(key, arg(a, 2))?,
            })
        },
    ),
    spec("OPTIONS_REMOVE", "session|target|key", (3, 3), true, |a| {
        Ok(Command::OptionsRemove {
            target: parse_target(arg(a, 0))?,
            key: parse_option_key(arg(a, 1))?,
        })
    }),
    spec(
        "HEALTH_SET",
        "session|route_id|path|interval|timeout",
        (5, 5),
        true,
        |a| {
            Ok(Command::HealthSet {
                route: parse_route_id(arg(a, 0))?,
                spec: parse_health(arg(a, 1), arg(a, 2), arg(a, 3))?,
            })
        },
    ),
    spec(
        "RATELIMIT_SET",
        "session|target|requests|window",
        (4, 4),
        true,
        |a| {
            Ok(Command::RateLimitSet {
                target: parse_target(arg(a, 0))?,
                spec: RateLimit {
                    requests: parse_positive("requests", arg(a, 1))?,
                    window: parse_named_duration("window", arg(a, 2))?,
                },
            })
        },
    ),
    spec(
        "CIRCUIT_BREAKER_SET",
        "session|target|threshold|timeout|half_open_requests",
        (5, 5),
        true,
        |a| {
            Ok(Command::CircuitBreakerSet {
                target: parse_target(arg(a, 0))?,
                spec: BreakerSpec {
                    threshold: parse_positive_u32("threshold", arg(a, 1))?,
                    timeout: parse_named_duration("timeout", arg(a, 2))?,
                    half_open_requests: parse_positive_u32("half_open_requests", arg(a, 3))?,
                },
            })
        },
    ),
    spec(
        "CIRCUIT_BREAKER_STATUS",
        "session|route_id",
        (2, 2),
        true,
        |a| Ok(Command::CircuitBreakerStatus(parse_route_id(arg(a, 0))?)),
    ),
    spec(
        "CIRCUIT_BREAKER_RESET",
        "session|route_id",
        (2, 2),
        true,
        |a| Ok(Command::CircuitBreakerReset(parse_route_id(arg(a, 0))?)),
    ),
    spec("CONFIG_VALIDATE", "session", (1, 1), true, |_| {
        Ok(Command::ConfigValidate)
    }),
    spec("CONFIG_APPLY", "session", (1, 1), true, |_| {
        Ok(Command::ConfigApply)
    }),
    spec("CONFIG_ROLLBACK", "session", (1, 1), true, |_| {
        Ok(Command::ConfigRollback)
    }),
    spec("CONFIG_DIFF", "session", (1, 1), true, |_| {
        Ok(Command::ConfigDiff)
    }),
    spec(
        "CONFIG_APPLY_PARTIAL",
        "session|scopes",
        (2, 2),
        true,
        |a| Ok(Command::ConfigApplyPartial(parse_scopes(arg(a, 0))?)),
    ),
    spec(
        "STATS_GET",
        "session|target|compressed",
        (1, 3),
        true,
        parse_stats,
    ),
    spec("BACKEND_TEST", "session|backend_url", (2, 2), true, |a| {
        Ok(Command::BackendTest(parse_backend(arg(a, 0))?))
    }),
    spec("DRAIN_START", "session|duration", (2, 2), true, |a| {
        Ok(Command::DrainStart(parse_named_duration(
            "duration",
            arg(a, 0),
        )?))
    }),
    spec("DRAIN_STATUS", "session", (1, 1), true, |_| {
        Ok(Command::DrainStatus)
    }),
    spec("DRAIN_CANCEL", "session", (1, 1), true, |_| {
        Ok(Command::DrainCancel)
    }),
    spec(
        "MAINT_ENTER",
        "session|target|backend_url",
        (2, 3),
        true,
        |a| {
            Ok(Command::MaintEnter {
                target: parse_maint_target(arg(a, 0))?,
                backend: match arg(a, 1) {
                    "" => None,
                    url => Some(parse_backend(url)?),
                },
            })
        },
    ),
    spec("MAINT_EXIT", "session|target", (2, 2), true, |a| {
        Ok(Command::MaintExit(parse_maint_target(arg(a, 0))?))
    }),
    spec("MAINT_STATUS", "session", (1, 1), true, |_| {
        Ok(Command::MaintStatus)
    }),
    spec("SUBSCRIBE", "session|event_type", (2, 2), true, |a| {
        Ok(Command::Subscribe(parse_event(arg(a, 0))?))
    }),
    spec("UNSUBSCRIBE", "session|event_type", (2, 2), true, |a| {
        Ok(Command::Unsubscribe(parse_event(arg(a, 0))?))
    }),
];

/// The names of every protocol command, in the order PROTOCOL.md lists them.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|s| s.name)
}

pub fn parse(line: &str) -> Result<Request, ParseError> {
    let mut fields: Vec<&str> = line.split('|').collect();
    let raw_name = fields.remove(0);
    let name = raw_name.to_ascii_uppercase();
    let Some(spec) = COMMANDS.iter().find(|s| s.name == name) else {
        let txn = fields.iter().take(2).find_map(|f| txn_of(f));
        let shown: String = raw_name.chars().take(64).collect();
        return Err(ParseError {
            txn,
            message: format!("unknown command: {}", shown.to_ascii_uppercase()),
        });
    };
    let Spec {
        name,
        usage,
        fields: (min, max),
        session: has_session,
        parse,
    } = *spec;
    let txn_pos = usize::from(has_session);
    let txn = fields.get(txn_pos).and_then(|f| txn_of(f));
    if txn.is_some() {
        fields.remove(txn_pos);
    }
    let fail = |message: String| ParseError {
        txn: txn.clone(),
        message,
    };
    if fields.len() < min || fields.len() > max {
        let optional = if max > min {
            " (last fields optional)"
        } else {
            ""
        };
        return Err(fail(format!(
            "invalid format: expected {name}|{usage}{optional}"
        )));
    }
    let (session, args) = if has_session {
        (Some(fields[0].to_string()), &fields[1..])
    } else {
        (None, &fields[..])
    };
    let command = parse(args).map_err(fail)?;
    Ok(Request {
        txn,
        session,
        name,
        command,
    })
}

fn txn_of(field: &str) -> Option<String> {
    field.starts_with("txn:").then(|| field.to_string())
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
