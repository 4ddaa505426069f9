//! Site files (`--sites`, `--global`, docs/SITES.md) written by the test:
//! added, changed, broken, disabled and removed; hosts owned across sites
//! and registered services; the global file's headers, unknown hosts and
//! certificates; two replicas on etcd watching one folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portico_e2e::edge::{served_serial, TestCa};
use portico_e2e::process::tempdir::TempDir;
use portico_e2e::{ctl, http_get, wait_for, ControlPlane, DataPlane, FakeBackend, Session};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// Writes `text` to `path` whole: written aside, then renamed, as editors save.
fn save(path: &Path, text: &str) {
    let aside = path.with_extension("tmp~");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn sites(cp: &ControlPlane) -> Value {
    serde_json::from_str(&ctl(cp, &["sites", "--json"])).unwrap()
}

fn site<'a>(list: &'a Value, file: &str) -> Option<&'a Value> {
    list["sites"].as_array()?.iter().find(|s| s["file"] == file)
}

/// Waits until `host` `path` answers `status` with `body` (when given).
fn served(dp: &DataPlane, host: &str, path: &str, status: u16, body: Option<&str>) -> Duration {
    let start = Instant::now();
    wait_for(&format!("{host}{path} answering {status}"), WAIT, || {
        let r = dp.get(host, path);
        (r.status == status && body.is_none_or(|b| r.body == b)).then_some(())
    });
    start.elapsed()
}

fn version(cp: &ControlPlane) -> u64 {
    let snap: Value = serde_json::from_str(&ctl(cp, &["snapshot", "--json"])).unwrap();
    snap["version"].as_u64().unwrap()
}

struct Folder {
    _dir: TempDir,
    sites: PathBuf,
    global: PathBuf,
}

fn folder() -> Folder {
    let dir = TempDir::new("portico-sites");
    let sites = dir.path().join("sites-available");
    std::fs::create_dir_all(&sites).unwrap();
    let global = dir.path().join("global.yaml");
    Folder {
        global,
        sites,
        _dir: dir,
    }
}

fn shop(backend: &str, extra_route: &str) -> String {
    format!(
        "enabled: true\nservice:\n  name: shop\nroutes:\n  - domains: [shop.test]\n    backend: {backend}\n{extra_route}headers:\n  X-Site: shop\n"
    )
}

#[test]
fn a_site_is_added_changed_broken_disabled_and_removed() {
    let f = folder();
    let cp = ControlPlane::start_with(&["--sites", f.sites.to_str().unwrap()]);
    let dp = DataPlane::start(&cp.grpc_url(), "sites-dp");
    let (web, api) = (FakeBackend::start("web"), FakeBackend::start("api"));
    let file = f.sites.join("shop.yaml");

    save(&file, &shop(&web.url(), ""));
    served(&dp, "shop.test", "/", 200, Some("web"));
    assert_eq!(dp.get("shop.test", "/").header("x-site"), Some("shop"));
    wait_for("the log line", WAIT, || {
        cp.proc.log_contains("site applied").then_some(())
    });
    let listed = sites(&cp);
    let s = site(&listed, "shop.yaml").expect("the site listed");
    assert_eq!(
        (
            s["name"].as_str(),
            s["routes"].as_u64(),
            s["enabled"].as_bool()
        ),
        (Some("shop"), Some(1), Some(true))
    );
    assert!(
        s["version"].as_u64().is_some() && s["error"].is_null(),
        "{s}"
    );
    // Sites show in the routes with their name as the service.
    let routes = ctl(&cp, &["routes"]);
    assert!(
        routes
            .lines()
            .any(|l| l.contains("shop") && l.contains("shop.test")),
        "{routes}"
    );

    // Changed: a longer prefix to another backend, and an unknown key.
    let api_route = format!(
        "  - domains: [shop.test]\n    path: /api\n    backend: {}\n    colour: blue\n",
        api.url()
    );
    save(&file, &shop(&web.url(), &api_route));
    let took = served(&dp, "shop.test", "/api/orders", 200, Some("api"));
    println!("a change served {took:?} after the write");
    served(&dp, "shop.test", "/", 200, Some("web"));
    let listed = sites(&cp);
    let warnings = site(&listed, "shop.yaml").unwrap()["warnings"].to_string();
    assert!(
        warnings.contains("unknown key routes[1].colour (ignored)"),
        "{warnings}"
    );

    // Broken: the last good state stays served; the error names the line.
    let before = version(&cp);
    save(
        &file,
        "service:\n  name: shop\nroutes:\n  - domains: [shop.test\n",
    );
    let error = wait_for("the error shown", WAIT, || {
        site(&sites(&cp), "shop.yaml")?["error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(
        error.starts_with("shop.yaml: ") && error.contains("line 4"),
        "{error}"
    );
    let api_view: Value = serde_json::from_str(
        &http_get(cp.admin, "localhost", "/api/v1/sites")
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(
        site(&api_view, "shop.yaml").unwrap()["error"],
        error.as_str()
    );
    let metrics = http_get(cp.admin, "localhost", "/metrics").unwrap().body;
    assert!(
        metrics.contains("portico_site_errors_total{site=\"shop.yaml\"} 1"),
        "{metrics}"
    );
    assert!(cp.proc.log_contains("site file not applied"));
    assert_eq!(dp.get("shop.test", "/api/x").body, "api");
    assert_eq!(version(&cp), before, "a bad file makes no version");
    // A bad backend URL is refused the same way.
    save(&file, &shop("ftp://nowhere:1", ""));
    wait_for("the URL error", WAIT, || {
        site(&sites(&cp), "shop.yaml")?["error"]
            .as_str()
            .filter(|e| e.contains("ftp://nowhere:1"))
            .map(|_| ())
    });
    assert_eq!(dp.get("shop.test", "/api/x").body, "api");

    // The same content again makes no version.
    save(&file, &shop(&web.url(), &api_route));
    wait_for("the error cleared", WAIT, || {
        site(&sites(&cp), "shop.yaml")?["error"]
            .is_null()
            .then_some(())
    });
    let applied = version(&cp);
    save(&file, &shop(&web.url(), &api_route));
    // A site read after shop.yaml in the same pass: once it is served, the
    // unchanged shop.yaml was read too, and made no version.
    let later = format!(
        "service: {{name: zz}}\nroutes:\n  - domains: [zz.test]\n    backend: {}\n",
        web.url()
    );
    save(&f.sites.join("zz.yaml"), &later);
    served(&dp, "zz.test", "/", 200, Some("web"));
    assert_eq!(
        version(&cp),
        applied + 1,
        "an unchanged file makes no version"
    );

    // Disabled, then removed.
    save(
        &file,
        &shop(&web.url(), &api_route).replace("enabled: true", "enabled: false"),
    );
    served(&dp, "shop.test", "/", 404, None);
    assert_eq!(site(&sites(&cp), "shop.yaml").unwrap()["routes"], 0);
    save(&file, &shop(&web.url(), ""));
    served(&dp, "shop.test", "/", 200, Some("web"));
    std::fs::remove_file(&file).unwrap();
    served(&dp, "shop.test", "/", 404, None);
    wait_for("the site gone from the list", WAIT, || {
        site(&sites(&cp), "shop.yaml").is_none().then_some(())
    });
    assert!(cp.proc.log_contains("site removed"));
}

#[test]
fn hosts_are_owned_across_sites_and_registered_services() {
    let f = folder();
    let cp = ControlPlane::start_with(&["--sites", f.sites.to_str().unwrap()]);
    let dp = DataPlane::start(&cp.grpc_url(), "owners-dp");
    let backend = FakeBackend::start("b");
    let mut service = Session::register(cp.registry, "billing", "billing-1");
    service.add_route("billing.test", "/", &backend.url());
    service.apply();

    // A site cannot take a registered service's host.
    let text = format!(
        "service: {{name: thief}}\nroutes:\n  - domains: [billing.test]\n    backend: {}\n",
        backend.url()
    );
    save(&f.sites.join("thief.yaml"), &text);
    let error = wait_for("the owner named", WAIT, || {
        site(&sites(&cp), "thief.yaml")?["error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(
        error.contains("billing.test") && error.contains("owned by service billing"),
        "{error}"
    );

    // Nor a registered service a site's, and two files cannot share a name.
    let text = format!(
        "service: {{name: docs}}\nroutes:\n  - domains: [docs.test]\n    backend: {}\n",
        backend.url()
    );
    save(&f.sites.join("docs.yaml"), &text);
    served(&dp, "docs.test", "/", 200, Some("b"));
    service.add_route("docs.test", "/", &backend.url());
    let reply = service.cmd("CONFIG_APPLY", "");
    assert!(
        reply.starts_with("ERROR") && reply.contains("owned by service docs"),
        "{reply}"
    );
    save(&f.sites.join("docs-copy.yaml"), &text);
    let error = wait_for("the name taken", WAIT, || {
        site(&sites(&cp), "docs-copy.yaml")?["error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(
        error.contains("service.name \"docs\" is already the site of docs.yaml"),
        "{error}"
    );
    served(&dp, "docs.test", "/", 200, Some("b"));
}

#[test]
fn the_global_file_sets_headers_unknown_hosts_and_certificates() {
    let f = folder();
    let ca = TestCa::new(f.sites.parent().unwrap());
    let pair = ca.issue(&["*.wild.test"], -1, 30);
    let certs = f.sites.parent().unwrap().join("wild");
    pair.write(f.sites.parent().unwrap(), "wild");
    let log = f.sites.parent().unwrap().join("access.log");
    save(
        &f.global,
        &format!(
            "defaults:\n  headers:\n    X-Global: yes-please\n    X-Frame-Options: DENY\n  options:\n    timeout: 20s\nblackhole:\n  unknown_domains: true\n  metrics_only: true\ntls:\n  certificates:\n    - domains: [\"*.wild.test\"]\n      cert_file: {}\n      key_file: {}\nwebhook:\n  url: http://127.0.0.1:9/hook\n  enabled: true\nsurprise: 1\n",
            certs.join("fullchain.pem").display(),
            certs.join("privkey.pem").display()
        ),
    );
    let cp = ControlPlane::start_with(&[
        "--sites",
        f.sites.to_str().unwrap(),
        "--global",
        f.global.to_str().unwrap(),
    ]);
    let mut dp = DataPlane::spawn(
        &cp.grpc_url(),
        "global-dp",
        &[
            "--listen-tls",
            "127.0.0.1:0",
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let tls = dp.proc.listening("tls");
    dp.wait_ready();
    let backend = FakeBackend::start("b");

    // A registered service's route gets the default headers.
    let mut service = Session::register(cp.registry, "app", "app-1");
    service.add_route("app.test", "/", &backend.url());
    service.apply();
    wait_for("the default header", WAIT, || {
        (dp.get("app.test", "/").header("x-global") == Some("yes-please")).then_some(())
    });
    // A site's own header wins over the default of the same name.
    let text = format!("service: {{name: framed}}\nroutes:\n  - domains: [framed.test]\n    backend: {}\nheaders:\n  X-Frame-Options: SAMEORIGIN\n", backend.url());
    save(&f.sites.join("framed.yaml"), &text);
    served(&dp, "framed.test", "/", 200, Some("b"));
    let r = dp.get("framed.test", "/");
    assert_eq!(
        (r.header("x-frame-options"), r.header("x-global")),
        (Some("SAMEORIGIN"), Some("yes-please"))
    );
    // The default options reach the site's routes.
    let config = dp.config().to_string();
    assert!(
        config.contains("20000ms") || config.contains("\"timeout\""),
        "{config}"
    );

    // An unknown host: 404, no backend, counted, not logged.
    let hits = backend.hits();
    let r = dp.get("nobody.test", "/secret");
    assert_eq!(r.status, 404);
    assert_eq!(backend.hits(), hits);
    dp.get("app.test", "/logged");
    wait_for("the routed request logged", WAIT, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("/logged"))
            .map(|_| ())
    });
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("nobody.test"));

    // The wildcard certificate is served for its hosts.
    wait_for("the wildcard certificate", WAIT, || {
        (served_serial(tls, "a.wild.test", &ca.pem) == Some(pair.serial.clone())).then_some(())
    });

    // The unknown key and the webhook are listed as warnings.
    let listed = sites(&cp);
    let warnings = listed["global"]["warnings"].to_string();
    assert!(
        warnings.contains("unknown key surprise (ignored)") && warnings.contains("webhook"),
        "{warnings}"
    );
    assert!(listed["global"]["error"].is_null());
}

#[test]
fn two_replicas_on_etcd_watching_one_folder_make_one_version_per_change() {
    let etcd = portico_e2e::etcd::Etcd::start();
    let f = folder();
    let mut args = etcd.replica_args("/sites-ha");
    args.extend(["--sites".to_string(), f.sites.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, b) = (
        ControlPlane::start_with(&args),
        ControlPlane::start_with(&args),
    );
    let dp = DataPlane::start(&a.grpc_url(), "ha-dp");
    let backend = FakeBackend::start("b");
    let start = version(&a);
    for (n, path) in ["/one", "/two", "/three"].iter().enumerate() {
        let text = format!("service: {{name: shared}}\nroutes:\n  - domains: [shared.test]\n    path: {path}\n    backend: {}\n", backend.url());
        save(&f.sites.join("shared.yaml"), &text);
        served(&dp, "shared.test", path, 200, Some("b"));
        // Both replicas read this save: one applied it, the other found it
        // served.
        wait_for("both replicas read the file", WAIT, || {
            let told = |cp: &ControlPlane| {
                let log = cp.proc.log_text();
                log.matches("site applied").count() + log.matches("site already served").count()
            };
            (told(&a) + told(&b) == 2 * (n + 1)).then_some(())
        });
        assert_eq!(version(&a), start + n as u64 + 1, "one version per change");
        assert_eq!(version(&b), start + n as u64 + 1);
    }
}

#[test]
fn a_site_broken_while_the_control_plane_was_down_stays_served_after_the_restart() {
    let f = folder();
    let backend = FakeBackend::start("kept");
    let file = f.sites.join("kept.yaml");
    save(
        &file,
        &format!(
            "service: {{name: kept}}\nroutes:\n  - domains: [kept.test]\n    backend: {}\n",
            backend.url()
        ),
    );
    let mut cp = ControlPlane::start_with(&["--sites", f.sites.to_str().unwrap()]);
    let dp = DataPlane::start(&cp.grpc_url(), "kept-dp");
    served(&dp, "kept.test", "/", 200, Some("kept"));
    let applied = version(&cp);

    cp.proc.kill();
    save(&file, "service: {name: kept\n");
    cp.start_again();
    let error = wait_for("the error shown", WAIT, || {
        site(&sites(&cp), "kept.yaml")?["error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(error.contains("line"), "{error}");
    assert_eq!(
        version(&cp),
        applied,
        "the stored site is not swept away: {}",
        cp.proc.log_text()
    );
    assert_eq!(dp.get("kept.test", "/").body, "kept");
    // Fixed, it is the same site: nothing to change.
    save(
        &file,
        &format!(
            "service: {{name: kept}}\nroutes:\n  - domains: [kept.test]\n    backend: {}\n",
            backend.url()
        ),
    );
    wait_for("the error cleared", WAIT, || {
        site(&sites(&cp), "kept.yaml")?["error"]
            .is_null()
            .then_some(())
    });
    assert_eq!(version(&cp), applied);
    assert!(cp.proc.log_contains("site already served"));
}
