use super::*;

fn ok(line: &str) -> Request {
    parse(line).unwrap_or_else(|e| panic!("{line:?} failed: {}", e.message))
}

fn err(line: &str) -> String {
    match parse(line) {
        Ok(r) => panic!("{line:?} parsed as {r:?}"),
        Err(e) => e.message,
    }
}

#[test]
fn every_command_parses() {
    let lines = [
        "REGISTER|svc|inst-1|9000|{\"v\":1}",
        "RECONNECT|S",
        "PING|S",
        "SESSION_INFO|S",
        "CLIENT_SHUTDOWN|S",
        "ROUTE_ADD|S|example.com|/api|http://127.0.0.1:8080|10",
        "ROUTE_ADD_BULK|S|[{\"domains\":[\"a.com\"],\"path\":\"/\",\"backend_url\":\"http://a:80\",\"priority\":1}]",
        "ROUTE_UPDATE|S|r1|priority|5",
        "ROUTE_REMOVE|S|r1",
        "ROUTE_LIST|S",
        "HEADERS_SET|S|ALL|X-Frame-Options|DENY",
        "HEADERS_REMOVE|S|r2|X-Frame-Options",
        "OPTIONS_SET|S|ALL|timeout|30s",
        "OPTIONS_REMOVE|S|r1|retries",
        "HEALTH_SET|S|r1|/health|10s|5s",
        "RATELIMIT_SET|S|r1|100|1m",
        "CIRCUIT_BREAKER_SET|S|ALL|5|30s|3",
        "CIRCUIT_BREAKER_STATUS|S|r1",
        "CIRCUIT_BREAKER_RESET|S|r1",
        "CONFIG_VALIDATE|S",
        "CONFIG_APPLY|S",
        "CONFIG_ROLLBACK|S",
        "CONFIG_DIFF|S",
        "CONFIG_APPLY_PARTIAL|S|routes,headers",
        "STATS_GET|S|r1",
        "BACKEND_TEST|S|http://127.0.0.1:9",
        "DRAIN_START|S|30s",
        "DRAIN_STATUS|S",
        "DRAIN_CANCEL|S",
        "MAINT_ENTER|S|ALL|http://127.0.0.1:9000",
        "MAINT_EXIT|S|r1,r2",
        "MAINT_STATUS|S",
        "SUBSCRIBE|S|all",
        "UNSUBSCRIBE|S|drain_completed",
    ];
    assert_eq!(lines.len(), 34);
    let names: Vec<&str> = command_names().collect();
    for (line, name) in lines.iter().zip(names) {
        assert_eq!(ok(line).name, name);
    }
}

#[test]
fn names_are_case_insensitive_and_txn_is_lifted() {
    let r = ok("route_add|S|txn:42|Example.com|/|http://a:80|");
    assert_eq!(r.txn.as_deref(), Some("txn:42"));
    assert_eq!(r.session.as_deref(), Some("S"));
    let Command::RouteAdd(route) = r.command else {
        panic!()
    };
    assert_eq!(route.domains, vec!["example.com"]);
    assert_eq!(route.priority, 0);
    let r = ok("REGISTER|txn:1|svc|i|0");
    assert_eq!(r.txn.as_deref(), Some("txn:1"));
    assert_eq!(
        parse("PING|S|txn:9|extra").unwrap_err().txn.as_deref(),
        Some("txn:9")
    );
}

#[test]
fn priority_may_be_left_out() {
    let Command::RouteAdd(route) = ok("ROUTE_ADD|S|a.com|/|http://a").command else {
        panic!()
    };
    assert_eq!(route.priority, 0);
}

#[test]
fn stats_get_forms() {
    let cases = [
        ("STATS_GET|S", Target::All, false),
        ("STATS_GET|S|compressed", Target::All, true),
        ("STATS_GET|S|ALL|compressed", Target::All, true),
        ("STATS_GET|S|r3", Target::Route(RouteId(3)), false),
    ];
    for (line, target, compressed) in cases {
        assert_eq!(
            ok(line).command,
            Command::StatsGet { target, compressed },
            "{line}"
        );
    }
}

#[test]
fn maintenance_targets() {
    let target = |line: &str| match ok(line).command {
        Command::MaintExit(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(target("MAINT_EXIT|S|all"), MaintTarget::All);
    assert_eq!(
        target("MAINT_EXIT|S|/admin"),
        MaintTarget::Path("/admin".into())
    );
    assert_eq!(
        target("MAINT_EXIT|S|r1, r2"),
        MaintTarget::Routes(vec![RouteId(1), RouteId(2)])
    );
    assert_eq!(
        target("MAINT_EXIT|S|Shop.Example.com"),
        MaintTarget::Domain("shop.example.com".into())
    );
}

#[test]
fn bad_lines_name_the_problem() {
    let cases = [
        ("FOO|x", "unknown command: FOO"),
        ("ROUTE_ADD|S|a.com|/", "invalid format: expected ROUTE_ADD|session|domains|path|backend_url|priority (last fields optional)"),
        ("PING", "invalid format: expected PING|session"),
        ("PING|S|extra", "invalid format: expected PING|session"),
        ("REGISTER|a b|i|0", "invalid service name \"a b\": use 1-128 of A-Z a-z 0-9 . _ -"),
        ("REGISTER|s|i|70000", "invalid maintenance_port \"70000\": must be 0-65535"),
        ("REGISTER|s|i|-1", "invalid maintenance_port \"-1\": must be 0-65535"),
        ("REGISTER|s|i|0|[1]", "invalid metadata: must be a JSON object"),
        ("ROUTE_ADD|S|a.com|/|ftp://x|0", "invalid backend url \"ftp://x\": scheme must be http, https, ws or wss"),
        ("ROUTE_ADD|S|a.com|api|http://a|0", "invalid path \"api\": must start with /"),
        ("ROUTE_ADD|S|a.com|/|http://a|high", "invalid priority \"high\": must be an integer between -1000000000 and 1000000000"),
        ("ROUTE_ADD|S|a.com:80|/|http://a|0", "invalid domain \"a.com:80\": ports are not allowed"),
        ("ROUTE_REMOVE|S|7", "invalid route id \"7\""),
        ("ROUTE_UPDATE|S|r1|color|red", "invalid field \"color\": must be backend_url, priority, domains or path"),
        ("ROUTE_ADD_BULK|S|[{\"domains\":[\"a.com\"],\"path\":\"/\",\"backend_url\":\"http://a\"},{\"domains\":[\"b.com\"],\"path\":\"/\",\"backend_url\":\"gopher://b\"}]", "item 1: invalid backend url \"gopher://b\": scheme must be http, https, ws or wss"),
        ("ROUTE_ADD_BULK|S|{}", "invalid json_array: must be a JSON array"),
        ("HEADERS_SET|S|ALL|Bad Name|v", "invalid header name \"Bad Name\""),
        ("HEADERS_SET|S|ALL|X-A|a\rb", "invalid header value: control characters are not allowed"),
        ("HEADERS_SET|S|ALL|Content-Length|5", "invalid header name \"Content-Length\": hop-by-hop and framing headers cannot be set"),
        ("HEADERS_SET|S|some|X-A|v", "invalid target \"some\": must be ALL or a route id"),
        ("OPTIONS_SET|S|ALL|speed|fast", "unknown option \"speed\""),
        ("OPTIONS_SET|S|ALL|retries|9", "invalid value \"9\" for option retries: must be an integer from 0 to 5"),
        ("OPTIONS_SET|S|ALL|timeout|0s", "invalid value \"0s\" for option timeout: duration \"0s\" must be positive"),
        ("OPTIONS_SET|S|ALL|websocket|maybe", "invalid value \"maybe\" for option websocket: must be true or false"),
        ("HEALTH_SET|S|r1|/h|5s|5s", "invalid timeout: must be shorter than interval"),
        ("HEALTH_SET|S|r1|/h|0|1", "invalid interval: duration \"0\" must be positive"),
        ("RATELIMIT_SET|S|r1|0|1m", "invalid requests \"0\": must be a positive integer"),
        ("RATELIMIT_SET|S|r1|10|-1m", "invalid window: negative duration \"-1m\""),
        ("CIRCUIT_BREAKER_SET|S|r1|x|30s|3", "invalid threshold \"x\": must be a positive integer"),
        ("CONFIG_APPLY_PARTIAL|S|routes,colors", "invalid scope \"colors\": must be routes, headers, options, health, ratelimit or circuit_breaker"),
        ("DRAIN_START|S|soon", "invalid duration: invalid duration \"soon\""),
        ("SUBSCRIBE|S|weather", "invalid event type \"weather\": must be backend_health_changed, global_config_changed, cert_renewed, drain_completed, circuit_breaker_changed, geo_blocked or all"),
        ("ROUTE_LIST|S|zip", "invalid field \"zip\": expected \"compressed\" or nothing"),
        ("MAINT_ENTER|S|", "invalid target: empty"),
    ];
    for (line, message) in cases {
        assert_eq!(err(line), message, "{line}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap, deterministic fuzz: every prefix and mutation of valid lines.
    let seeds = [
        "ROUTE_ADD|S|txn:1|a.com,*.b.com|/x|https://[::1]:8443|-3",
        "ROUTE_ADD_BULK|S|[{\"domains\":[\"a.com\"],\"path\":\"/\",\"backend_url\":\"http://a\",\"priority\":9}]",
        "MAINT_ENTER|S|r1,r2|http://h:1",
        "OPTIONS_SET|S|ALL|timeout|1h30m500ms",
    ];
    let junk = ['|', '\u{0}', 'é', ':', '[', '{', '-', '9', '*', ','];
    for seed in seeds {
        for cut in 0..=seed.len() {
            if !seed.is_char_boundary(cut) {
                continue;
            }
            let _ = parse(&seed[..cut]);
            for j in junk {
                let mut s = seed[..cut].to_string();
                s.push(j);
                s.push_str(&seed[cut..]);
                let _ = parse(&s);
            }
        }
    }
}

/// Found by fuzzing: a JSON key's `\n` escape came back raw in the error,
/// and the reply became two lines.
#[test]
fn an_error_quoting_a_newline_is_one_reply_line() {
    let e = parse(r#"ROUTE_ADD_BULK|S|[{"dom\nains":"/x:1","pr":0}]"#).unwrap_err();
    assert!(e.message.contains('\n'), "{:?}", e.message);
    let line = crate::protocol::Reply::error(e.message).render(None);
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
}
