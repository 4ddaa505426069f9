//! ROUTE_ADD, ROUTE_ADD_BULK, ROUTE_UPDATE, ROUTE_REMOVE, ROUTE_LIST, the reply cap, ownership and isolation.

use super::*;

#[test]
fn routes_add_bulk_update_remove_list() {
    let cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "web", "web-1");
    let [r1, r2, r3] = add_one_and_in_bulk(&mut s);
    the_list_shows_them_staged(&mut s, [&r1, &r2, &r3]);
    s.apply();
    let r4 = update_remove_and_add(&mut s, [&r1, &r2, &r3]);
    bad_updates_and_removes_are_refused(&mut s, &r1, &r3);
    s.apply();
    assert_eq!(
        s.cmd("ROUTE_REMOVE", &r3),
        "ERROR|route not found",
        "removed route"
    );

    the_compressed_list_shows_them_active(&mut s, [r1, r2, r4]);
}

/// ROUTE_ADD (idempotent, case-insensitive host) and ROUTE_ADD_BULK (all or
/// nothing, bad items named by index).
fn add_one_and_in_bulk(s: &mut Session) -> [String; 3] {
    let r1 = s.add_route("a.example.com", "/", "http://127.0.0.1:9001");
    assert_eq!(
        s.cmd("ROUTE_ADD", "a.example.com|/|http://127.0.0.1:9001|0"),
        format!("ROUTE_OK|{r1}"),
        "identical add returns the same id"
    );
    assert_eq!(
        s.cmd("ROUTE_ADD", "A.EXAMPLE.COM|/|http://127.0.0.1:9001|"),
        format!("ROUTE_OK|{r1}")
    );

    let bulk = s.json(
        "ROUTE_ADD_BULK",
        r#"[{"domains":["b.example.com"],"path":"/v1","backend_url":"http://127.0.0.1:9002","priority":5},{"domains":["c.example.com","*.c.example.com"],"path":"/","backend_url":"https://127.0.0.1:9443"}]"#,
        "ROUTE_BULK_OK",
    );
    assert_eq!(bulk.as_array().unwrap().len(), 2);
    assert!(bulk
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["status"] == "ok" && i["route_id"].as_str().unwrap().starts_with('r')));
    let r2 = bulk[0]["route_id"].as_str().unwrap().to_string();
    let r3 = bulk[1]["route_id"].as_str().unwrap().to_string();
    // All or nothing: a bad item stages none, and is named by index.
    let bad = s.cmd("ROUTE_ADD_BULK", r#"[{"domains":["d.example.com"],"path":"/","backend_url":"http://127.0.0.1:1"},{"domains":["e.example.com"],"path":"x","backend_url":"http://127.0.0.1:1"}]"#);
    assert_eq!(bad, "ERROR|item 1: invalid path \"x\": must start with /");
    assert_eq!(
        s.cmd("ROUTE_ADD_BULK", "[1,2"),
        "ERROR|invalid json_array: EOF while parsing a list at line 1 column 4"
    );
    assert_eq!(
        s.cmd("ROUTE_ADD_BULK", r#"[{"path":"/"}]"#),
        "ERROR|item 0: missing domains"
    );

    [r1, r2, r3]
}

/// ROUTE_LIST of staged routes, with every field.
fn the_list_shows_them_staged(s: &mut Session, [r1, r2, r3]: [&String; 3]) {
    let list = s.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(
        route_ids(&list),
        vec![
            (r1.clone(), "staged".into()),
            (r2.clone(), "staged".into()),
            (r3.clone(), "staged".into())
        ]
    );
    let first = &list[0];
    for key in [
        "route_id",
        "id",
        "domains",
        "path",
        "backend",
        "backend_url",
        "priority",
        "status",
    ] {
        assert!(
            first.get(key).is_some(),
            "ROUTE_LIST item lacks {key}: {first}"
        );
    }
    assert_eq!(first["id"], first["route_id"]);
    assert_eq!(list[1]["priority"], 5);
    assert_eq!(
        list[2]["domains"],
        json!(["c.example.com", "*.c.example.com"])
    );
}

/// ROUTE_UPDATE of each field and ROUTE_REMOVE on applied routes, and a new
/// one beside them: the list shows what is pending.
fn update_remove_and_add(s: &mut Session, [r1, r2, r3]: [&String; 3]) -> String {
    assert_eq!(
        s.cmd(
            "ROUTE_UPDATE",
            &format!("{r1}|backend_url|http://127.0.0.1:9009")
        ),
        "ROUTE_OK"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r2}|priority|7")),
        "ROUTE_OK"
    );
    assert_eq!(
        s.cmd(
            "ROUTE_UPDATE",
            &format!("{r2}|domains|b.example.com,bb.example.com")
        ),
        "ROUTE_OK"
    );
    assert_eq!(s.cmd("ROUTE_UPDATE", &format!("{r2}|path|/v2")), "ROUTE_OK");
    assert_eq!(s.cmd("ROUTE_REMOVE", r3), "ROUTE_OK");
    let r4 = s.add_route("f.example.com", "/", "ws://127.0.0.1:9010");
    let list = s.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(
        route_ids(&list),
        vec![
            (r1.clone(), "modified".into()),
            (r2.clone(), "modified".into()),
            (r3.clone(), "pending_removal".into()),
            (r4.clone(), "staged".into())
        ]
    );
    assert_eq!(list[0]["backend_url"], "http://127.0.0.1:9009");
    assert_eq!(list[1]["path"], "/v2");
    assert_eq!(list[1]["priority"], 7);

    r4
}

fn bad_updates_and_removes_are_refused(s: &mut Session, r1: &str, r3: &str) {
    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r1}|weight|3")),
        "ERROR|invalid field \"weight\": must be backend_url, priority, domains or path"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r1}|priority|x")),
        "ERROR|invalid priority \"x\": must be an integer between -1000000000 and 1000000000"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", &format!("{r3}|priority|1")),
        "ERROR|route not found",
        "pending removal"
    );
    assert_eq!(
        s.cmd("ROUTE_UPDATE", "r999|priority|1"),
        "ERROR|route not found"
    );
    assert_eq!(s.cmd("ROUTE_REMOVE", "r999"), "ERROR|route not found");
    assert_eq!(s.cmd("ROUTE_REMOVE", "x1"), "ERROR|invalid route id \"x1\"");
    assert_eq!(
        s.cmd("ROUTE_REMOVE", r3),
        "ERROR|route not found",
        "already pending removal"
    );
}

fn the_compressed_list_shows_them_active(s: &mut Session, [r1, r2, r4]: [String; 3]) {
    let compressed = s.cmd("ROUTE_LIST", "compressed");
    let list = gunzip_base64(compressed.strip_prefix("ROUTE_LIST_OK|").unwrap());
    assert_eq!(
        route_ids(&list),
        vec![
            (r1, "active".into()),
            (r2, "active".into()),
            (r4, "active".into())
        ]
    );
    assert_eq!(
        s.cmd("ROUTE_LIST", "gzip"),
        "ERROR|invalid field \"gzip\": expected \"compressed\" or nothing"
    );
}

#[test]
fn uncompressed_responses_are_capped_at_64_kib() {
    let cp = ControlPlane::start();
    let mut s = Session::register(cp.registry, "big", "big-1");
    // Lines are capped at 16 KiB, so the routes go in batches.
    for batch in 0..8 {
        let items: Vec<Value> = (0..50)
            .map(|i| json!({"domains": [format!("host-{batch}-{i}.a-rather-long-domain-name.example.com")], "path": "/some/longer/path/prefix", "backend_url": "http://127.0.0.1:9000"}))
            .collect();
        let reply = s.cmd("ROUTE_ADD_BULK", &Value::Array(items).to_string());
        assert!(
            reply.starts_with("ROUTE_BULK_OK|"),
            "{}",
            &reply[..80.min(reply.len())]
        );
    }
    assert_eq!(
        s.cmd("ROUTE_LIST", ""),
        "ERROR|response too large; use compressed"
    );
    let compressed = s.cmd("ROUTE_LIST", "compressed");
    assert_eq!(
        gunzip_base64(compressed.strip_prefix("ROUTE_LIST_OK|").unwrap())
            .as_array()
            .unwrap()
            .len(),
        400
    );
}

#[test]
fn another_service_is_refused_and_the_owner_named() {
    let cp = ControlPlane::start();
    let mut billing = Session::register(cp.registry, "billing", "b-1");
    let mut shop = Session::register(cp.registry, "shop", "s-1");
    billing.add_route("api.example.com", "/v1", "http://127.0.0.1:1");
    billing.apply();
    let id = shop.add_route("api.example.com", "/v1/", "http://127.0.0.1:2");
    let other = shop.add_route("api.example.com", "/v2", "http://127.0.0.1:2");
    let expected = format!("ERROR|route {id}: api.example.com/v1/ is owned by service billing");
    assert_eq!(shop.cmd("CONFIG_VALIDATE", ""), expected);
    assert_eq!(shop.cmd("CONFIG_APPLY", ""), expected);
    shop.cmd("ROUTE_REMOVE", &id);
    shop.apply();
    let list = shop.json("ROUTE_LIST", "", "ROUTE_LIST_OK");
    assert_eq!(route_ids(&list), vec![(other, "active".into())]);
}

#[test]
fn sessions_cannot_see_each_others_routes() {
    let cp = ControlPlane::start();
    let mut a = Session::register(cp.registry, "a", "a-1");
    let mut b = Session::register(cp.registry, "b", "b-1");
    let theirs = a.add_route("a.test", "/", "http://127.0.0.1:1");
    a.apply();
    let commands = [
        ("ROUTE_REMOVE", theirs.clone()),
        ("ROUTE_UPDATE", format!("{theirs}|priority|9")),
        ("HEADERS_SET", format!("{theirs}|X-A|1")),
        ("OPTIONS_SET", format!("{theirs}|retries|1")),
        ("HEALTH_SET", format!("{theirs}|/h|2s|1s")),
        ("RATELIMIT_SET", format!("{theirs}|5|1s")),
        ("CIRCUIT_BREAKER_SET", format!("{theirs}|5|1s|1")),
        ("CIRCUIT_BREAKER_STATUS", theirs.clone()),
        ("CIRCUIT_BREAKER_RESET", theirs.clone()),
        ("STATS_GET", theirs.clone()),
        ("MAINT_ENTER", theirs.clone()),
        ("MAINT_EXIT", theirs.clone()),
    ];
    for (name, rest) in &commands {
        let unknown = rest.replace(&theirs, "r987654");
        assert_eq!(b.cmd(name, rest), "ERROR|route not found", "{name}");
        assert_eq!(
            b.cmd(name, &unknown),
            "ERROR|route not found",
            "{name} with an unknown id"
        );
    }
    assert_eq!(b.json("ROUTE_LIST", "", "ROUTE_LIST_OK"), json!([]));
    assert_eq!(
        route_ids(&a.json("ROUTE_LIST", "", "ROUTE_LIST_OK")),
        vec![(theirs, "active".into())]
    );
}
