//! Transaction ids on every reply, and malformed lines that change nothing.

use super::*;

#[test]
fn transaction_ids_are_echoed_on_every_kind_of_reply() {
    let cp = ControlPlane::start();
    let mut c = LineClient::connect(cp.registry);
    let ack = c.send("REGISTER|txn:1|x|x-1|0");
    assert!(ack.starts_with("ACK|txn:1|x-1-"), "{ack}");
    let id = ack.rsplit('|').next().unwrap().to_string();
    assert_eq!(c.send(&format!("PING|{id}|txn:2")), "PONG|txn:2");
    assert_eq!(
        c.send(&format!(
            "ROUTE_ADD|{id}|txn:42|a.test|/|http://127.0.0.1:1|0"
        )),
        "ROUTE_OK|txn:42|r1"
    );
    assert_eq!(c.send(&format!("CONFIG_APPLY|{id}|txn:43")), "OK|txn:43");
    assert_eq!(
        c.send(&format!("ROUTE_REMOVE|{id}|txn:44|r77")),
        "ERROR|txn:44|route not found"
    );
    assert_eq!(c.send(&format!("ROUTE_ADD|{id}|txn:45|a.test")), "ERROR|txn:45|invalid format: expected ROUTE_ADD|session|domains|path|backend_url|priority (last fields optional)");
    assert_eq!(c.send("PING|nobody|txn:46"), "ERROR|txn:46|invalid session");
    assert_eq!(c.send("RECONNECT|nobody|txn:47"), "REREGISTER|txn:47");
    assert!(c
        .send(&format!("SESSION_INFO|{id}|txn:48"))
        .starts_with("SESSION_OK|txn:48|{"));
}

/// At least 60 malformed lines, each answered with ERROR while the
/// connection stays usable and the session's state does not change.
#[test]
fn malformed_lines_change_nothing() {
    let cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "mal", "mal-1");
    let r1 = s.add_route("mal.test", "/", "http://127.0.0.1:1");
    s.apply();
    s.add_route("staged.test", "/", "http://127.0.0.1:2");
    let before = (
        s.json("ROUTE_LIST", "", "ROUTE_LIST_OK"),
        s.json("CONFIG_DIFF", "", "DIFF_OK"),
    );
    let id = s.id.clone();
    let lines: Vec<String> = [
        "NOPE", "NOPE|x", "|", "||||", "REGISTER", "REGISTER|a", "REGISTER|a|b", "REGISTER|a|b|x", "REGISTER|a|b|-1",
        "REGISTER|a|b|65536", "REGISTER|a|b|1|[]", "REGISTER|a|b|1|\"s\"", "REGISTER|a|b|1|{", "REGISTER||b|1", "REGISTER|a||1",
        "REGISTER|a/b|c|1", "REGISTER|a|b|1|{}|extra", "PING", "PING|S|extra", "SESSION_INFO", "ROUTE_ADD|S", "ROUTE_ADD|S|a.com|/",
        "ROUTE_ADD|S||/|http://a|0", "ROUTE_ADD|S|a.com,|/|http://a|0", "ROUTE_ADD|S|a.com|/|http://a|1.5", "ROUTE_ADD|S|a.com|/|http://a|0|x",
        "ROUTE_ADD|S|a.com|/|mailto:x|0", "ROUTE_ADD|S|a.com|/|http://u:p@a|0", "ROUTE_ADD|S|a.com|/ x|http://a|0", "ROUTE_ADD|S|bad_host!|/|http://a|0",
        "ROUTE_ADD_BULK|S|", "ROUTE_ADD_BULK|S|[]", "ROUTE_ADD_BULK|S|{\"a\":1}", "ROUTE_ADD_BULK|S|[{\"domains\":[],\"path\":\"/\",\"backend_url\":\"http://a\"}]",
        "ROUTE_ADD_BULK|S|[{\"domains\":[\"a.com\"],\"path\":\"/\",\"backend_url\":\"http://a\",\"color\":1}]",
        "ROUTE_UPDATE|S|r1|priority", "ROUTE_UPDATE|S|r1|path|nope", "ROUTE_UPDATE|S|r1|domains|", "ROUTE_UPDATE|S|one|priority|1",
        "ROUTE_REMOVE|S", "ROUTE_REMOVE|S|r", "ROUTE_LIST|S|compressed|x", "HEADERS_SET|S|ALL|X-A", "HEADERS_SET|S|ALL||v",
        "HEADERS_SET|S|ALL|X:A|v", "HEADERS_SET|S|ALL|Transfer-Encoding|chunked", "HEADERS_REMOVE|S|ALL", "OPTIONS_SET|S|ALL|timeout",
        "OPTIONS_SET|S|ALL|timeout|soon", "OPTIONS_SET|S|ALL|http2|2", "OPTIONS_REMOVE|S|ALL", "HEALTH_SET|S|r1|/h|1s",
        "HEALTH_SET|S|r1|/h|x|1s", "HEALTH_SET|S|ALL|/h|2s|1s", "RATELIMIT_SET|S|r1|10", "RATELIMIT_SET|S|r1|ten|1m",
        "CIRCUIT_BREAKER_SET|S|r1|1|1s", "CIRCUIT_BREAKER_SET|S|r1|1|x|1", "CIRCUIT_BREAKER_STATUS|S", "CIRCUIT_BREAKER_RESET|S|",
        "CONFIG_APPLY_PARTIAL|S", "CONFIG_APPLY|S|extra", "STATS_GET|S|r1|zip", "STATS_GET|S|a|b|c", "BACKEND_TEST|S", "DRAIN_START|S",
        "DRAIN_START|S|1y", "DRAIN_START|S|1.5s", "MAINT_ENTER|S", "MAINT_ENTER|S|r1|x", "MAINT_EXIT|S|", "SUBSCRIBE|S",
        "UNSUBSCRIBE|S|a|b", "DRAIN_STATUS|S|x",
    ]
    .iter()
    .map(|l| l.replace("|S", &format!("|{id}")))
    .collect();
    assert!(lines.len() >= 60, "{} lines", lines.len());
    for line in &lines {
        let reply = s.client.send(line);
        assert!(reply.starts_with("ERROR|"), "{line:?} answered {reply:?}");
        assert!(
            reply.len() > "ERROR|".len() + 5,
            "{line:?}: message too short: {reply}"
        );
        assert_eq!(s.cmd("PING", ""), "PONG", "after {line:?}");
    }
    let after = (
        s.json("ROUTE_LIST", "", "ROUTE_LIST_OK"),
        s.json("CONFIG_DIFF", "", "DIFF_OK"),
    );
    assert_eq!(before, after, "bad lines changed the session");
    assert_eq!(s.json("SESSION_INFO", "", "SESSION_OK")["routes_active"], 1);
    assert_eq!(
        s.cmd("ROUTE_REMOVE", &r1),
        "ROUTE_OK",
        "the route is still there"
    );
}
