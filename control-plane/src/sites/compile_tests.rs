use super::*;
use crate::protocol::RouteId;

fn site(text: &str) -> Site {
    compile("shop.yaml", text, &Value::Null).expect("the site reads")
}

fn error(text: &str) -> String {
    compile("shop.yaml", text, &Value::Null)
        .expect_err("the site is refused")
        .to_string()
}

const SHOP: &str = r#"
# sites-available/shop.yaml
enabled: true
service:
  name: shop
  maintenance_port: 8081
routes:
  - domains: [shop.example.com, www.shop.example.com]
    path: /
    backend: http://shop-web:8080
  - domains: [shop.example.com]
    path: /api
    backend: http://shop-api:9000
    websocket: true
    headers:
      Cache-Control: no-store
headers:
  X-Frame-Options: SAMEORIGIN
options:
  health_check_path: /health
  health_check_interval: 10s
  timeout: 30s
  max_body_size: 10M
  timeouts: {connect: 3s, read: 15s, idle: 60s}
  circuit_breaker: {enabled: true, failure_threshold: 5, timeout: 30s}
  rate_limit: {enabled: true, requests_per_min: 120, burst_size: 20, per_ip: true, whitelist: [10.0.0.0/8]}
"#;

#[test]
fn the_example_of_sites_md_reads_into_routes_and_settings() {
    let s = site(SHOP);
    assert_eq!(
        (s.name.as_str(), s.enabled, s.maintenance_port),
        ("shop", true, 8081)
    );
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.routes[1].input.path, "/api");
    assert_eq!(
        s.routes[1].input.backend.to_string(),
        "http://shop-api:9000"
    );
    assert!(s.routes[1].websocket && !s.routes[0].websocket);
    let e = error("service: {name: a}\nheaders: {Connection: close}\n");
    assert!(e.contains("hop-by-hop"), "{e}");
    assert_eq!(
        s.routes[0].input.domains,
        ["shop.example.com", "www.shop.example.com"]
    );

    let state = s.state(&[RouteId(7), RouteId(8)]);
    let api = state.settings.resolve(RouteId(8));
    let web = state.settings.resolve(RouteId(7));
    // The route's header and the site's, route first by name.
    assert_eq!(
        api.response_headers,
        [
            ("Cache-Control".to_string(), "no-store".to_string()),
            ("X-Frame-Options".to_string(), "SAMEORIGIN".to_string())
        ]
    );
    assert_eq!(web.response_headers.len(), 1);
    assert_eq!(
        api.duration(OptionKey::Timeout),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        api.duration(OptionKey::ConnectTimeout),
        Some(Duration::from_secs(3))
    );
    assert!(api.flag(OptionKey::Websocket) && !web.flag(OptionKey::Websocket));
    let health = web.health.expect("a health check on every route");
    assert_eq!(
        (health.path.as_str(), health.interval),
        ("/health", Duration::from_secs(10))
    );
    assert_eq!(
        web.circuit_breaker,
        Some(BreakerSpec {
            threshold: 5,
            timeout: Duration::from_secs(30),
            half_open_requests: 1
        })
    );
    assert_eq!(
        web.rate_limit,
        Some(RateLimit {
            requests: 120,
            window: Duration::from_secs(60)
        })
    );
    assert_eq!(
        web.options[&OptionKey::RatelimitExempt].to_string(),
        "10.0.0.0/8"
    );
    // What has no setting yet is named, never dropped silently.
    for family in [
        "max_body_size",
        "timeouts.read",
        "timeouts.idle",
        "rate_limit.burst_size",
    ] {
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains(family) && w.contains("not enforced yet")),
            "{family}: {:?}",
            s.warnings
        );
    }
}

#[test]
fn a_route_takes_the_root_path_by_default_and_a_disabled_site_serves_nothing() {
    let s = site("enabled: false\nservice: {name: a}\nroutes:\n  - domains: [a.test]\n    backend: http://127.0.0.1:1\n");
    assert_eq!(s.routes[0].input.path, "/");
    assert!(s.state(&[RouteId(1)]).active().is_empty());
}

#[test]
fn bad_values_are_refused_with_their_line() {
    let base = "service: {name: a}\nroutes:\n  - domains: [a.test]\n";
    let e = error(&format!("{base}    backend: nope://x\n"));
    assert!(e.contains("nope://x") && e.contains("line 3"), "{e}");
    let e = error(&format!(
        "{base}    backend: http://a:1\noptions:\n  timeout: soon\n"
    ));
    assert!(
        e.contains("invalid duration \"soon\"") && e.contains("line 6"),
        "{e}"
    );
    let e = error("service: {name: a}\nroutes:\n  - domains: [a.test\n");
    assert!(e.contains("line"), "{e}");
    let e = error(&format!("{base}    backend: h2c://a:1\n"));
    assert!(
        e.contains("h2c:// (HTTP/2 without TLS) is not supported yet"),
        "{e}"
    );
    assert_eq!(error("routes: []\n"), "service.name is required");
    let e =
        error("service: {name: a}\nroutes:\n  - domains: [bad host]\n    backend: http://a:1\n");
    assert!(e.contains("bad host"), "{e}");
    let e = error("service: {name: a}\nroutes:\n  - domains: [a.test]\n");
    assert_eq!(e, "routes[0]: backend is required");
    let twice = "  - domains: [a.test]\n    backend: http://a:1\n";
    let e = error(&format!("service: {{name: a}}\nroutes:\n{twice}{twice}"));
    assert!(e.contains("routes[1]: the same domains"), "{e}");
}

#[test]
fn an_empty_file_is_a_site_without_a_name() {
    assert_eq!(error(""), "service.name is required");
    assert_eq!(error("# only a comment\n"), "service.name is required");
    let global = format::read::<format::GlobalFile>("", &["defaults", "options"]).unwrap();
    assert!(global.value.defaults.is_none() && global.options.is_null());
}

#[test]
fn unknown_keys_are_warnings() {
    let s = site("service: {name: a, colour: red}\nroutes:\n  - domains: [a.test]\n    backend: http://a:1\n    weight: 3\nextra: 1\noptions:\n  compression: {enabled: true, zstd: true}\n");
    for key in [
        "service.colour",
        "routes[0].weight",
        "extra",
        "options.compression.zstd",
    ] {
        assert!(
            s.warnings
                .iter()
                .any(|w| w == &format!("unknown key {key} (ignored)")),
            "{key}: {:?}",
            s.warnings
        );
    }
}

#[test]
fn empty_keys_are_absent_and_header_values_may_be_numbers() {
    let s = site("service: {name: a}\nheaders:\noptions:\nroutes:\n  - domains: [a.test]\n    backend: http://a:1\n    headers: {X-Version: 2, X-On: true}\n");
    assert!(s.headers.is_empty() && s.options.is_empty());
    assert_eq!(
        s.routes[0].headers["x-version"],
        ("X-Version".to_string(), "2".to_string())
    );
    assert_eq!(s.routes[0].headers["x-on"].1, "true");
}

fn options(text: &str) -> Site {
    site(&format!(
        "service: {{name: a}}\nroutes: []\noptions:\n{text}"
    ))
}

#[test]
fn compression_and_websocket_read_as_a_bool_or_a_map() {
    assert_eq!(
        options("  compression: true\n").options[&OptionKey::Compression],
        OptionValue::Bool(true)
    );
    let s = options("  compression: {enabled: false, algorithms: [brotli, gzip]}\n");
    assert_eq!(s.options[&OptionKey::Compression], OptionValue::Bool(false));
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("compression (algorithms")));
    assert_eq!(
        options("  websocket: true\n").options[&OptionKey::Websocket],
        OptionValue::Bool(true)
    );
    let s = options("  websocket: {enabled: true, max_connections: 10}\n");
    assert_eq!(s.options[&OptionKey::Websocket], OptionValue::Bool(true));
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("websocket (max_connections")));
}

#[test]
fn health_check_timeouts_and_defaults() {
    let s = options("  health_check_path: /up\n  health_check_timeout: 2s\n");
    let h = s.health.unwrap();
    assert_eq!(
        (h.interval, h.timeout),
        (HEALTH_INTERVAL, Duration::from_secs(2))
    );
    assert_eq!(
        s.options[&OptionKey::HealthCheckTimeout],
        OptionValue::Duration(Duration::from_secs(2))
    );
    assert!(options("  health_check_interval: 5s\n").health.is_none());
}

#[test]
fn circuit_breaker_maps_thresholds_and_disabled_means_none() {
    let s = options("  circuit_breaker: {failure_threshold: 3, success_threshold: 2, timeout: 10s, window: 1m}\n");
    assert_eq!(
        s.breaker,
        Some(BreakerSpec {
            threshold: 3,
            timeout: Duration::from_secs(10),
            half_open_requests: 2
        })
    );
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("circuit_breaker.window")));
    assert!(
        options("  circuit_breaker: {enabled: false, failure_threshold: 3}\n")
            .breaker
            .is_none()
    );
}

#[test]
fn rate_limit_takes_the_minute_window_or_else_the_hour() {
    let s = options("  rate_limit: {requests_per_hour: 1000}\n");
    assert_eq!(
        s.rate_limit,
        Some(RateLimit {
            requests: 1000,
            window: Duration::from_secs(3600)
        })
    );
    let s =
        options("  rate_limit: {requests_per_min: 10, requests_per_hour: 100, per_route: true}\n");
    assert_eq!(s.rate_limit.unwrap().requests, 10);
    assert!(s.warnings.iter().any(|w| w.contains("requests_per_hour")));
    assert!(s.warnings.iter().any(|w| w.contains("per_route")));
    assert!(
        options("  rate_limit: {enabled: false, requests_per_min: 10}\n")
            .rate_limit
            .is_none()
    );
    let e = error("service: {name: a}\noptions:\n  rate_limit: {whitelist: [10.0.0.0/99]}\n");
    assert!(e.contains("10.0.0.0/99"), "{e}");
}

#[test]
fn retry_counts_attempts_beyond_the_first() {
    let s = options("  retry: {enabled: true, max_attempts: 3, backoff: exponential, initial_delay: 100ms, retry_on: [connection_refused, timeout, \"502\"]}\n");
    assert_eq!(s.options[&OptionKey::Retries], OptionValue::Count(2));
    assert!(s.warnings.iter().any(|w| w.contains("retry (backoff")));
    let s = options("  retry: {max_attempts: 9}\n");
    assert_eq!(s.options[&OptionKey::Retries], OptionValue::Count(5));
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("9 attempts asked, 6 kept")));
}

#[test]
fn families_of_later_issues_are_read_checked_and_named() {
    let s = options(concat!(
        "  waf: {enabled: true, block_mode: true, sensitivity: high, check_body: true, max_body_size: 1M, whitelist: [127.0.0.1]}\n",
        "  pii: {enabled: true, mask_ip_method: last_octet, mask_ipv6_method: last_64, strip_headers: [Cookie]}\n",
        "  geoip: {enabled: true, database_path: /x.mmdb, expected_countries: [DE, FR], cache_expiry_minutes: 5}\n",
        "  retention: {enabled: true, policy_type: private, access_log_days: 7, strip_headers: [Authorization]}\n",
        "  slow_request: {enabled: true, warning: 1s, critical: 5s, timeout: 30s}\n",
        "  connection_pool: {max_idle_conns: 100, idle_timeout: 90s}\n",
        "  limits: {max_request_body: 10M, max_response_body: 1G}\n",
        "  http3: true\n",
    ));
    for family in [
        "waf",
        "retention",
        "slow_request",
        "connection_pool",
        "limits",
        "http3",
    ] {
        assert!(
            s.warnings
                .iter()
                .any(|w| w == &format!("options.{family}: read and kept, not enforced yet")),
            "{family}: {:?}",
            s.warnings
        );
    }
    assert!(options("  waf: {enabled: false}\n").warnings.is_empty());
    // Kept with the site, as the store holds it.
    let state = s.state(&[]);
    assert_eq!(
        state.identity.metadata["site_options"]["waf"]["sensitivity"],
        "high"
    );
    assert_eq!(
        state.record().metadata["site_options"]["geoip"]["expected_countries"][1],
        "FR"
    );
    let e = error("service: {name: a}\noptions:\n  waf: {sensitivity: extreme}\n");
    assert!(e.contains("extreme"), "{e}");
    let e = error("service: {name: a}\noptions:\n  limits: {max_request_body: 10T}\n");
    assert!(e.contains("invalid size \"10T\""), "{e}");
}

#[test]
fn geoip_and_the_rate_limit_whitelist_map_onto_options() {
    let s = options("  geoip: {enabled: true, expected_countries: [DE, fr], alert_on_unusual_country: true}\n  rate_limit: {requests_per_min: 10, whitelist: [10.0.0.0/8, 192.0.2.7]}\n");
    assert_eq!(s.options[&OptionKey::GeoAllow].to_string(), "de,fr");
    assert_eq!(
        s.options[&OptionKey::RatelimitExempt].to_string(),
        "10.0.0.0/8,192.0.2.7"
    );
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("alert_on_unusual_country")));
    assert!(!s.warnings.iter().any(|w| w.contains("whitelist")));
    let e = error("service: {name: a}\noptions:\n  geoip: {expected_countries: [Germany]}\n");
    assert!(e.contains("not a two-letter country code"), "{e}");
    assert!(
        options("  geoip: {enabled: false, expected_countries: [DE]}\n")
            .options
            .is_empty()
    );
}

#[test]
fn pii_maps_onto_the_pii_options() {
    let s = options("  pii: {enabled: true, mask_ip_method: hash, mask_ipv6_method: hash, strip_headers: [Cookie, Authorization], mask_query_params: [token], preserve_localhost: true}\n");
    assert_eq!(s.options[&OptionKey::PiiIp], OptionValue::Word("hash"));
    assert_eq!(
        s.options[&OptionKey::PiiStripHeaders].to_string(),
        "authorization,cookie"
    );
    assert_eq!(s.options[&OptionKey::PiiMaskQuery].to_string(), "token");
    assert_eq!(
        s.options[&OptionKey::PiiPreservePrivate],
        OptionValue::Bool(true)
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let s = options("  pii: {mask_ip_method: last_octet, mask_ipv6_method: full}\n");
    assert_eq!(
        s.options[&OptionKey::PiiIp],
        OptionValue::Word("last_octet")
    );
    assert!(s
        .warnings
        .iter()
        .any(|w| w.contains("one method masks both")));
    // go-proxy files also put these under retention.
    let s = options("  retention: {enabled: false, mask_query_params: [password]}\n");
    assert_eq!(s.options[&OptionKey::PiiMaskQuery].to_string(), "password");
    assert!(options("  pii: {enabled: false, mask_ip_method: full}\n")
        .options
        .is_empty());
}

#[test]
fn a_sites_options_override_the_global_defaults_key_by_key() {
    let defaults: Value = serde_yaml_ng::from_str(
        "timeout: 5s\ncompression: true\ncircuit_breaker: {failure_threshold: 9, timeout: 1m}\n",
    )
    .unwrap();
    let text =
        "service: {name: a}\noptions:\n  timeout: 7s\n  circuit_breaker: {failure_threshold: 2}\n";
    let s = compile("a.yaml", text, &defaults).unwrap();
    assert_eq!(
        s.options[&OptionKey::Timeout],
        OptionValue::Duration(Duration::from_secs(7))
    );
    assert_eq!(s.options[&OptionKey::Compression], OptionValue::Bool(true));
    let b = s.breaker.unwrap();
    assert_eq!((b.threshold, b.timeout), (2, Duration::from_secs(60)));
}

#[test]
fn sizes_take_powers_of_1024() {
    assert_eq!(
        format::Size::parse("10485760"),
        Ok(format::Size(10_485_760))
    );
    assert_eq!(format::Size::parse("100M"), Ok(format::Size(100 << 20)));
    assert_eq!(format::Size::parse("1G"), Ok(format::Size(1 << 30)));
    assert_eq!(format::Size::parse("4K"), Ok(format::Size(4096)));
    assert!(format::Size::parse("M").is_err());
}
