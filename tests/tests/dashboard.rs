//! The dashboard as operators see it: its JSON API and live stream read
//! directly, and the page rendered by headless Chromium, whose DOM carries
//! the charts' points, the tables and the route page.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use portico_e2e::edge::TestCa;
use portico_e2e::process::tempdir::TempDir;
use portico_e2e::{http_get, wait_for, ControlPlane, DataPlane, FakeBackend, Session};
use serde_json::Value;

/// A page as a real browser renders it: Chromium runs its scripts, takes
/// two ticks of the live stream (`?ticks=2` closes it then, so the page
/// goes quiet and virtual time runs out) and dumps the DOM.
fn rendered(url: &str, profile: &std::path::Path) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1400,1000",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (Debian's chromium package) is installed by scripts/setup.sh --tests");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut dom).map(|_| dom)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium: {status}");
    reader.join().unwrap().unwrap()
}

/// The text of the first element carrying `attrs` (as written in the DOM dump).
fn element_text<'a>(dom: &'a str, attrs: &str) -> Option<&'a str> {
    let at = dom.find(attrs)?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(&rest[start..end])
}

/// The opening tag of the element with `id`.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The points a chart drew, from its `data-points` attribute: `[t, y…]`.
fn chart_points(dom: &str, id: &str) -> Vec<Vec<Value>> {
    let tag = tag(dom, id);
    let raw = tag
        .split("data-points=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("#{id} has no points: {tag}"));
    let json = raw
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    let columns: Vec<Vec<Value>> = serde_json::from_str(&json).unwrap();
    columns
}

fn api(cp: &ControlPlane, path: &str) -> Value {
    let reply = http_get(cp.admin, "localhost", path).unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    serde_json::from_str(&reply.body).unwrap()
}

/// The first `tick` of the live stream.
fn first_tick(cp: &ControlPlane) -> Value {
    let mut stream = std::net::TcpStream::connect(cp.admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut lines = BufReader::new(stream).lines().map(Result::unwrap);
    let status = lines.next().unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let head: Vec<String> = lines.by_ref().take_while(|l| !l.is_empty()).collect();
    assert!(
        head.iter().any(|h| h == "content-type: text/event-stream"),
        "{head:?}"
    );
    assert_eq!(lines.next().unwrap(), "event: tick");
    let data = lines.next().unwrap();
    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap()
}

#[test]
fn the_dashboard_charts_traffic_and_shows_planes_certificates_replicas_and_routes() {
    let profile = TempDir::new("portico-chromium");
    let dir = TempDir::new("portico-dash");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    TestCa::new(dir.path())
        .issue(&["dash.test"], -1, 20)
        .write(&certs, "dash");
    let cp = ControlPlane::start_with(&["--cert-dir", &certs.display().to_string()]);
    let dp = DataPlane::start(&cp.grpc_url(), "dp-dash");
    let backend = FakeBackend::start("dash");
    let mut s = Session::register(cp.registry, "storefront", "storefront-1");
    let r = s.add_route("dash.test", "/", &backend.url());
    s.add_route("other.test", "/api", &backend.url());
    s.apply();

    // The API the page is built on.
    let sessions = api(&cp, "/api/v1/sessions");
    assert_eq!(sessions["sessions"][0]["instance"], "storefront-1");
    assert_eq!(sessions["sessions"][0]["state"], "connected");
    let planes = api(&cp, "/api/v1/dataplanes");
    assert_eq!(planes["dataplanes"][0]["node_id"], "dp-dash");
    // Version 1 installed the certificate, 2 the routes.
    assert_eq!(planes["dataplanes"][0]["acked_version"], 2);
    let kinds: Vec<String> = api(&cp, "/api/v1/events")["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str().map(String::from))
        .collect();
    assert!(kinds.iter().any(|k| k == "push") && kinds.iter().any(|k| k == "ack"));
    let cert = wait_for("the certificate listed", Duration::from_secs(10), || {
        let certs = api(&cp, "/api/v1/certs");
        (certs["certificates"][0]["name"] == "file:dash").then(|| certs["certificates"][0].clone())
    });
    assert_eq!(cert["days_left"], 19, "{cert}");
    let replicas = api(&cp, "/api/v1/replicas");
    assert_eq!(replicas["replicas"][0]["self"], true, "{replicas}");
    let tick = first_tick(&cp);
    assert_eq!(tick["version"], 2, "{tick}");
    assert_eq!(tick["dataplanes"]["connected"], 1, "{tick}");
    assert_eq!(
        tick["routes"],
        serde_json::json!([]),
        "no traffic yet: {tick}"
    );

    let page = format!("http://{}/?ticks=2", cp.admin);
    let before = rendered(&page, profile.path());
    assert!(
        before.contains("data-instance=\"storefront-1\""),
        "{before}"
    );
    assert!(before.contains("data-hosts=\"dash.test\""), "{before}");
    assert!(before.contains("data-node=\"dp-dash\""), "{before}");
    let requests = |dom: &str| -> u64 {
        element_text(dom, &format!("data-route=\"{r}\" data-field=\"requests\""))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no request count for {r}: {dom}"))
    };
    assert_eq!(requests(&before), 0, "no traffic yet");
    assert!(
        before.contains("data-ticks=\"2\""),
        "the page took two ticks of the live stream: {before}"
    );
    assert_eq!(
        element_text(&before, "data-cert=\"file:dash\""),
        Some("19 days"),
        "{before}"
    );
    assert!(
        before.contains("class=\"warn\" data-cert=\"file:dash\""),
        "under 30 days is a warning: {before}"
    );
    assert!(before.contains("data-replica="), "{before}");

    // Traffic: six requests, counted once reported (every second), and
    // charted once their 10 s step has closed.
    for _ in 0..6 {
        assert_eq!(dp.get("dash.test", "/").status, 200);
    }
    // A report may fall on a step's edge: wait until every step holding
    // one of the six has closed.
    wait_for("the six requests charted", Duration::from_secs(30), || {
        let series = api(&cp, "/api/v1/series");
        let requests: f64 = series["rps"]
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .map(|rps| rps * series["step_secs"].as_f64().unwrap_or(0.0))
            .sum();
        ((requests - 6.0).abs() < 1e-9).then_some(())
    });
    let after = rendered(&page, profile.path());
    assert_eq!(requests(&after), 6, "{after}");
    let points = chart_points(&after, "chart-rps");
    assert_eq!(points.len(), 2, "time and req/s: {points:?}");
    let drawn: f64 = points[1].iter().filter_map(Value::as_f64).sum();
    assert!((drawn * 10.0 - 6.0).abs() < 1e-9, "{points:?}");
    assert!(
        after.contains("class=\"uplot"),
        "uPlot drew the charts: {after}"
    );
    let latency = chart_points(&after, "chart-latency");
    assert_eq!(latency.len(), 3, "time, p50 and p99");

    // The route page: its settings, backends and its own charts; another
    // route's traffic is not in them.
    let route_page = rendered(&format!("{page}#/route/{r}"), profile.path());
    assert_eq!(
        element_text(&route_page, "data-setting=\"backend\""),
        Some(backend.url().as_str()),
        "{route_page}"
    );
    assert_eq!(
        element_text(&route_page, &format!("data-health=\"{r}\"")),
        Some("up")
    );
    let route_points = chart_points(&route_page, "route-chart-rps");
    let drawn: f64 = route_points[1].iter().filter_map(Value::as_f64).sum();
    assert!((drawn * 10.0 - 6.0).abs() < 1e-9, "{route_points:?}");
    let other = api(&cp, "/api/v1/series/r2");
    assert!(
        other["rps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64() == Some(0.0)),
        "{other}"
    );
    assert_eq!(
        http_get(cp.admin, "localhost", "/api/v1/series/r99")
            .unwrap()
            .status,
        404
    );
}

#[test]
fn the_dashboard_lists_the_site_files_with_their_errors() {
    let profile = TempDir::new("portico-chromium");
    let dir = TempDir::new("portico-dash-sites");
    let sites = dir.path().join("sites");
    std::fs::create_dir_all(&sites).unwrap();
    let backend = FakeBackend::start("dash");
    let good = format!(
        "service: {{name: blog}}\nroutes:\n  - domains: [blog.test]\n    backend: {}\n",
        backend.url()
    );
    std::fs::write(sites.join("blog.yaml"), good).unwrap();
    std::fs::write(sites.join("broken.yaml"), "service: [\n").unwrap();
    let cp = ControlPlane::start_with(&["--sites", &sites.display().to_string()]);
    let dp = DataPlane::start(&cp.grpc_url(), "dp-dash-sites");
    wait_for("the site served", Duration::from_secs(10), || {
        (dp.get("blog.test", "/").status == 200).then_some(())
    });
    let listed = api(&cp, "/api/v1/sites");
    assert_eq!(listed["sites"][0]["name"], "blog", "{listed}");

    let dom = rendered(&format!("http://{}/?ticks=2", cp.admin), profile.path());
    assert_eq!(
        element_text(&dom, "data-site=\"blog.yaml\""),
        Some("blog"),
        "{dom}"
    );
    let error = element_text(&dom, "data-site-error=\"broken.yaml\"").unwrap_or_default();
    assert!(
        error.starts_with("broken.yaml: ") && error.contains("line"),
        "{dom}"
    );
    // The site's route, with the site's name as its service.
    assert!(dom.contains("data-hosts=\"blog.test\""), "{dom}");
}
