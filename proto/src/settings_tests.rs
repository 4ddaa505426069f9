use super::*;

fn wire() -> v1::RouteSettings {
    v1::RouteSettings {
        response_headers: vec![v1::Header {
            name: "X-A".into(),
            value: "1".into(),
        }],
        options: vec![
            v1::Option {
                key: "timeout".into(),
                value: "1500ms".into(),
            },
            v1::Option {
                key: "websocket".into(),
                value: "true".into(),
            },
            v1::Option {
                key: "retries".into(),
                value: "2".into(),
            },
        ],
        health: Some(v1::HealthCheck {
            path: "/h".into(),
            interval_ms: 5000,
            timeout_ms: 1000,
        }),
        rate_limit: Some(v1::RateLimit {
            requests: 10,
            window_ms: 1000,
        }),
        circuit_breaker: Some(v1::CircuitBreaker {
            threshold: 3,
            timeout_ms: 30_000,
            half_open_requests: 1,
        }),
    }
}

#[test]
fn the_wire_form_round_trips_and_reads_typed() {
    let typed = RouteSettings::try_from(&wire()).unwrap();
    assert_eq!(
        typed.duration(OptionKey::Timeout),
        Some(Duration::from_millis(1500))
    );
    assert!(typed.flag(OptionKey::Websocket) && !typed.flag(OptionKey::Http2));
    assert_eq!(typed.retries(), 2);
    assert_eq!(v1::RouteSettings::from(&typed), wire());
}

#[test]
fn bad_values_are_refused_with_the_rule_they_break() {
    let mut bad = wire();
    bad.options[0].value = "soon".into();
    assert_eq!(
        RouteSettings::try_from(&bad).unwrap_err().to_string(),
        "invalid value \"soon\" for option timeout: not in canonical form"
    );
    let mut many = wire();
    many.options[2].value = "6".into();
    assert!(RouteSettings::try_from(&many).is_err());
    let mut zero = wire();
    zero.rate_limit.as_mut().unwrap().requests = 0;
    assert_eq!(
        RouteSettings::try_from(&zero).unwrap_err().to_string(),
        "rate limit must be positive"
    );
    assert_eq!(
        OptionKey::Retries.parse_value("6").unwrap_err().to_string(),
        "invalid value \"6\" for option retries: must be an integer from 0 to 5"
    );
    assert_eq!(
        OptionKey::from_name("Colour").unwrap_err().to_string(),
        "unknown option \"Colour\""
    );
    assert_eq!(
        OptionKey::Timeout.parse_value("30s"),
        Ok(OptionValue::Duration(Duration::from_secs(30)))
    );
    assert_eq!(
        OptionKey::Http2.parse_value("on"),
        Ok(OptionValue::Bool(true))
    );
}

#[test]
fn a_drain_ramps_from_full_weight_to_none() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let d = Drain {
        started_at: start,
        duration: Duration::from_secs(10),
    };
    assert_eq!(d.weight_at(start), 1.0);
    assert_eq!(d.weight_at(start + Duration::from_secs(4)), 0.6);
    assert_eq!(d.weight_at(start + Duration::from_secs(30)), 0.0);
    assert_eq!(d.weight_at(start - Duration::from_secs(1)), 1.0);
    assert_eq!(Drain::from(&v1::Drain::from(&d)), d);
}

#[test]
fn maintenance_keeps_its_entry_time() {
    let m = Maintenance {
        backend: Some(BackendUrl::parse("http://m:81").unwrap()),
        entered_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
    };
    assert_eq!(
        Maintenance::try_from(&v1::Maintenance::from(&m)).unwrap(),
        m
    );
}
