//! HTTPS at the edge with certificates from a watched directory: SNI (exact,
//! wildcard, unknown), HTTP/2 by ALPN, a replaced pair served within 5 s with
//! no failed handshake, `https_redirect`, and bad pairs that change nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_e2e::edge::{curl_https, served_serial, TestCa, TlsConn};
use portico_e2e::process::tempdir::TempDir;
use portico_e2e::{ctl, wait_for, ControlPlane, DataPlane, FakeBackend, Session};

struct Edge {
    _dir: TempDir,
    certs: std::path::PathBuf,
    ca: TestCa,
    cp: ControlPlane,
    dp: DataPlane,
    tls: SocketAddr,
    backend: FakeBackend,
}

/// A control plane watching a fresh cert dir with pairs for `a.test` and
/// `*.w.test`, and a data plane with a TLS listener.
fn edge() -> Edge {
    let dir = TempDir::new("portico-edge");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = TestCa::new(dir.path());
    ca.issue(&["a.test"], -1, 30).write(&certs, "a");
    ca.issue(&["*.w.test"], -1, 30).write(&certs, "w");
    let cp = ControlPlane::start_with(&["--cert-dir", &certs.display().to_string()]);
    let mut dp = DataPlane::spawn(&cp.grpc_url(), "edge-dp", &["--listen-tls", "127.0.0.1:0"]);
    let tls = dp.proc.listening("tls");
    dp.wait_ready();
    let backend = FakeBackend::start("site");
    Edge {
        _dir: dir,
        certs,
        ca,
        cp,
        dp,
        tls,
        backend,
    }
}

impl Edge {
    fn route(&self, hosts: &[&str]) -> Session {
        let mut session = Session::register(self.cp.registry, "site", "site-1");
        for host in hosts {
            session.add_route(host, "/", &self.backend.url());
        }
        session.apply();
        session
    }

    /// Waits until the data plane holds `n` certificates.
    fn wait_certs(&self, n: usize) {
        wait_for(
            "the certificates on the data plane",
            Duration::from_secs(10),
            || {
                let config = self.dp.config();
                (config["certificates"].as_array().map_or(0, Vec::len) == n).then_some(())
            },
        );
    }
}

#[test]
fn sni_picks_exact_and_wildcard_certificates_offers_h2_and_refuses_unknown_names() {
    let e = edge();
    let _session = e.route(&["a.test", "x.w.test"]);
    e.wait_certs(2);
    let ca = &e.ca.pem;

    let exact = curl_https(e.tls, "a.test", "/", ca, &["--http1.1"]);
    assert_eq!(
        (exact.code, exact.out.as_str()),
        (0, "200 1.1"),
        "{}",
        exact.err
    );
    let wildcard = curl_https(e.tls, "x.w.test", "/", ca, &["--http1.1"]);
    assert_eq!(
        (wildcard.code, wildcard.out.as_str()),
        (0, "200 1.1"),
        "{}",
        wildcard.err
    );
    let h2 = curl_https(e.tls, "a.test", "/", ca, &["--http2"]);
    assert_eq!((h2.code, h2.out.as_str()), (0, "200 2"), "{}", h2.err);
    // A wildcard covers one label only, and unknown names get no certificate.
    for host in ["y.x.w.test", "unknown.test"] {
        let refused = curl_https(e.tls, host, "/", ca, &[]);
        assert_eq!(refused.code, 35, "{host}: {} {}", refused.out, refused.err);
        assert!(
            refused.err.contains("unrecognized name"),
            "{host}: {}",
            refused.err
        );
    }
    // TLS 1.2 and 1.3 only: a client offering at most 1.1 is refused.
    for (version, accepted) in [("-tls1_1", false), ("-tls1_2", true), ("-tls1_3", true)] {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &e.tls.to_string(),
                "-servername",
                "a.test",
            ])
            .args([version, "-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running openssl s_client");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.success() && text.contains("BEGIN CERTIFICATE"),
            accepted,
            "{version}: {text}"
        );
        // Refused by the data plane, not left unoffered by the client.
        assert!(accepted || text.contains("protocol version"), "{text}");
    }

    // The backend hears the request came over TLS (its health probes
    // interleave, so the request is looked for by its path).
    wait_for("a request seen over TLS", Duration::from_secs(10), || {
        curl_https(e.tls, "a.test", "/proto-check", ca, &[]);
        let seen = e.backend.last_request.lock().unwrap().to_ascii_lowercase();
        (seen.starts_with("get /proto-check")).then_some(seen)
    })
    .contains("x-forwarded-proto: https")
    .then_some(())
    .expect("X-Forwarded-Proto: https");

    // The data plane says which certificate each host uses; operators see
    // every certificate and the data planes serving it.
    let config = e.dp.config();
    let hosts: Vec<_> = config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["certificates"].clone())
        .collect();
    assert!(
        hosts.contains(&serde_json::json!({"a.test": "file:a"})),
        "{hosts:?}"
    );
    assert!(
        hosts.contains(&serde_json::json!({"x.w.test": "file:w"})),
        "{hosts:?}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ctl(&e.cp, &["certs", "--json"])).unwrap();
    let certs = listed["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{listed}");
    for cert in certs {
        assert_eq!(cert["source"], "file");
        assert_eq!(cert["served_by"], serde_json::json!(["edge-dp"]), "{cert}");
        assert!(cert["serial"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let table = ctl(&e.cp, &["certs"]);
    assert!(
        table.contains("*.w.test") && table.contains("edge-dp"),
        "{table}"
    );
}

#[test]
fn a_replaced_pair_is_served_within_5_s_without_a_failed_handshake() {
    let e = edge();
    let mut session = e.route(&["a.test"]);
    assert_eq!(session.cmd("SUBSCRIBE", "cert_renewed"), "SUBSCRIBE_OK");
    e.wait_certs(2);
    let ca = e.ca.pem.clone();
    let mut established = TlsConn::connect(e.tls, "a.test", &ca).unwrap();
    assert_eq!(established.get("a.test", "/").unwrap(), 200);
    let old = established.serial();

    // New handshakes, one after another, throughout the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, ca, tls) =
            (stop.clone(), ok.clone(), failed.clone(), ca.clone(), e.tls);
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match TlsConn::connect(tls, "a.test", &ca).and_then(|mut c| c.get("a.test", "/")) {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        })
    };
    wait_for("handshakes under way", Duration::from_secs(10), || {
        (ok.load(Ordering::Relaxed) > 20).then_some(())
    });

    let replaced = Instant::now();
    let new = e.ca.issue(&["a.test"], -1, 60);
    new.write(&e.certs, "a");
    let took = wait_for("the new certificate served", Duration::from_secs(5), || {
        (served_serial(e.tls, "a.test", &ca).as_deref() == Some(new.serial.as_str()))
            .then(|| replaced.elapsed())
    });
    let handshakes_before = ok.load(Ordering::Relaxed);
    wait_for(
        "more handshakes after the swap",
        Duration::from_secs(10),
        || (ok.load(Ordering::Relaxed) > handshakes_before + 20).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed handshakes: {errors:?}"
    );
    assert_ne!(old, new.serial);
    println!(
        "replaced pair served after {took:?}; {} handshakes, 0 failed",
        ok.load(Ordering::Relaxed)
    );

    // The connection made before the swap still serves, with its old certificate.
    assert_eq!(established.get("a.test", "/").unwrap(), 200);
    assert_eq!(established.serial(), old);

    // The session with a route on a.test hears of it, once per installation
    // (the first one came before it subscribed).
    let event = session.client.read_line();
    let payload = event
        .strip_prefix("EVENT|cert_renewed|")
        .unwrap_or_else(|| panic!("{event}"));
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["domains"], serde_json::json!(["a.test"]));
    assert_eq!(payload["source"], "file");
    assert!(payload["not_after"].as_str().is_some(), "{payload}");
}

#[test]
fn https_redirect_answers_308_to_the_same_host_path_and_query() {
    let e = edge();
    let mut session = Session::register(e.cp.registry, "site", "site-1");
    let r = session.add_route("a.test", "/", &e.backend.url());
    assert_eq!(
        session.cmd("OPTIONS_SET", &format!("{r}|https_redirect|true")),
        "OPTIONS_OK"
    );
    session.apply();
    let plain = e.dp.get("a.test", "/shop/cart?item=7&x=%20");
    assert_eq!(plain.status, 308);
    assert_eq!(
        plain.header("location"),
        Some(format!("https://a.test:{}/shop/cart?item=7&x=%20", e.tls.port()).as_str())
    );
    // The route's first probe (`GET /`) may land at any moment after the
    // apply, so the backend's counts are read for the test's own paths.
    assert_eq!(e.backend.hits_for("/shop/cart?item=7&x=%20"), 0);
    // ACME challenge paths are never redirected (this one is not held, so it routes).
    let challenge =
        e.dp.get("a.test", "/.well-known/acme-challenge/unknown-token");
    assert_eq!(challenge.status, 200);
    assert_eq!(
        e.backend
            .hits_for("/.well-known/acme-challenge/unknown-token"),
        1
    );
    // Over TLS the route serves.
    e.wait_certs(2);
    let tls = curl_https(e.tls, "a.test", "/shop", &e.ca.pem, &[]);
    assert_eq!((tls.code, tls.out.as_str()), (0, "200 2"), "{}", tls.err);
}

fn break_pair(dir: &Path, how: &str, ca: &TestCa, other_key: &str) {
    let chain = dir.join("fullchain.pem");
    let key = dir.join("privkey.pem");
    match how {
        "mismatched key" => std::fs::write(&key, other_key).unwrap(),
        "expired" => {
            let old = ca.issue(&["a.test"], -30, -1);
            std::fs::write(&key, &old.key).unwrap();
            std::fs::write(&chain, &old.chain).unwrap();
        }
        "truncated" => {
            let pem = std::fs::read_to_string(&chain).unwrap();
            std::fs::write(&chain, &pem[..pem.len() / 2]).unwrap();
        }
        "unreadable" => {
            // Root reads any file whatever its mode: directories in their
            // place cannot be read by anyone.
            for file in [&chain, &key] {
                std::fs::remove_file(file).unwrap();
                std::fs::create_dir(file).unwrap();
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn bad_pairs_are_refused_with_a_clear_error_and_the_last_good_one_stays() {
    let e = edge();
    let _session = e.route(&["a.test"]);
    e.wait_certs(2);
    let good = served_serial(e.tls, "a.test", &e.ca.pem).unwrap();
    let other_key = e.ca.issue(&["b.test"], -1, 30).key;
    let cases = [
        (
            "mismatched key",
            "the private key does not match the certificate",
        ),
        ("expired", "the certificate expired at"),
        ("truncated", "the chain does not parse"),
        ("unreadable", "Is a directory"),
    ];
    for (how, error) in cases {
        // A good pair first, then broken in place.
        let pair = e.ca.issue(&["a.test"], -1, 30);
        pair.write(&e.certs, "a");
        wait_for(
            &format!("the good pair before {how}"),
            Duration::from_secs(5),
            || {
                (served_serial(e.tls, "a.test", &e.ca.pem).as_deref() == Some(pair.serial.as_str()))
                    .then_some(())
            },
        );
        break_pair(&e.certs.join("a"), how, &e.ca, &other_key);
        wait_for(&format!("the {how} error"), Duration::from_secs(5), || {
            e.cp.proc
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("not installing this pair") && l.contains(error))
                .then_some(())
        });
        assert_eq!(
            served_serial(e.tls, "a.test", &e.ca.pem).as_deref(),
            Some(pair.serial.as_str()),
            "{how}: the last good pair stays"
        );
        assert_eq!(
            e.dp.get("a.test", "/").status,
            200,
            "{how}: HTTP unaffected"
        );
        e.cp.proc.log.lock().unwrap().clear();
        if how == "unreadable" {
            for file in ["fullchain.pem", "privkey.pem"] {
                std::fs::remove_dir(e.certs.join("a").join(file)).unwrap();
            }
        }
    }
    assert_ne!(good, "");

    // A new directory whose pair never checks installs nothing.
    let bad = e.ca.issue(&["bad.test"], -1, 30);
    let dir = e.certs.join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fullchain.pem"), &bad.chain).unwrap();
    std::fs::write(dir.join("privkey.pem"), &other_key).unwrap();
    wait_for("the mismatch logged", Duration::from_secs(5), || {
        e.cp.proc.log_contains("file:bad").then_some(())
    });
    let listed: serde_json::Value =
        serde_json::from_str(&ctl(&e.cp, &["certs", "--json"])).unwrap();
    let names: Vec<_> = listed["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["file:a", "file:w"]);

    // A removed directory takes its certificate away.
    std::fs::remove_dir_all(e.certs.join("w")).unwrap();
    e.wait_certs(1);
}
