//! Spawning the real binaries and learning their ports from their logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{http_get, wait_for};

/// Where cargo put the binaries: next to the test executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PORTICO_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --bins` first",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) when dropped, with its output kept.
pub struct Proc {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String]) -> Proc {
        Self::spawn_with_env(name, args, &[])
    }

    pub fn spawn_with_env(name: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        Self::spawn_program(&bin(name), name, args, env)
    }

    /// Any program (a system tool the tests use), by path or by name on PATH.
    pub fn spawn_program(
        program: &std::path::Path,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            // A test that must see every log line sets PORTICO_TEST_LOG=debug.
            .env(
                "RUST_LOG",
                std::env::var("PORTICO_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        Proc {
            child,
            log,
            name: name.to_string(),
        }
    }

    /// The address a `listening listener="what" addr=…` log line reported.
    pub fn listening(&mut self, what: &str) -> SocketAddr {
        let needle = format!("listener=\"{what}\"");
        let found = wait_for(
            &format!("{} {what} listener", self.name),
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("{} exited with {status}:\n{}", self.name, self.log_text());
                }
                let log = self.log.lock().unwrap();
                log.iter()
                    .find(|l| l.contains(" listening ") && l.contains(&needle))
                    .and_then(|l| l.split("addr=").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string)
            },
        );
        found.parse().expect("listening address")
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `QUIT`, `STOP`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), timeout, || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        Some(self.wait_exit(Duration::from_secs(10)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

pub struct ControlPlane {
    pub proc: Proc,
    pub registry: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: tempdir::TempDir,
    extra: Vec<String>,
}

impl ControlPlane {
    pub fn start() -> ControlPlane {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> ControlPlane {
        let data_dir = tempdir::TempDir::new("portico-cp");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let proc = Self::spawn(&data_dir, ["127.0.0.1:0"; 3].map(String::from), &extra);
        Self::ready(proc, data_dir, extra)
    }

    /// Spawns a control plane on ephemeral ports without waiting for it,
    /// for starts that are meant to fail.
    pub fn spawn_only(data_dir: &tempdir::TempDir, extra: &[&str]) -> Proc {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir, ["127.0.0.1:0"; 3].map(String::from), &extra)
    }

    fn spawn(data_dir: &tempdir::TempDir, listen: [String; 3], extra: &[String]) -> Proc {
        let mut args: Vec<String> = [
            "--registry-listen",
            &listen[0],
            "--grpc-listen",
            &listen[1],
            "--admin-listen",
            &listen[2],
            "--session-threads",
            "2",
            // Many processes share two cores during the suite; a starved data
            // plane may take longer than the 2 s default to acknowledge, and
            // these tests check what OK means, not the timeout.
            "--apply-timeout",
            "10s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--data-dir".into());
        args.push(data_dir.path().display().to_string());
        args.extend(extra.iter().cloned());
        Proc::spawn("portico-cp", &args)
    }

    fn ready(mut proc: Proc, data_dir: tempdir::TempDir, extra: Vec<String>) -> ControlPlane {
        let registry = proc.listening("registry");
        let grpc = proc.listening("grpc");
        let admin = proc.listening("admin");
        wait_for("control plane /ready", Duration::from_secs(20), || {
            http_get(admin, "localhost", "/ready")
                .ok()
                .filter(|r| r.status == 200)
        });
        ControlPlane {
            proc,
            registry,
            grpc,
            admin,
            data_dir,
            extra,
        }
    }

    /// Starts the control plane again (after `kill` or `terminate`) on the
    /// same ports and data dir.
    pub fn start_again(&mut self) {
        let listen = [self.registry, self.grpc, self.admin].map(|a| a.to_string());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut proc = Self::spawn(&self.data_dir, listen.clone(), &self.extra);
            // The old process's ports may take a moment to be free again.
            let started = wait_for(
                "the restarted control plane",
                Duration::from_secs(20),
                || {
                    if proc.log_contains("portico-cp ready") {
                        return Some(true);
                    }
                    proc.exited().map(|_| false)
                },
            );
            if started {
                self.proc = proc;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cannot restart:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for("control plane /ready", Duration::from_secs(20), || {
            http_get(self.admin, "localhost", "/ready")
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// The flags `start_again` passes besides the listeners and data dir.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `portico-cp export` of its data dir (stopped first: the store is
    /// the running process's).
    pub fn export(&self) -> String {
        let dir = self.data_dir.path().display().to_string();
        let export = Command::new(bin("portico-cp"))
            .args(["--data-dir", &dir, "export"])
            .output()
            .expect("running portico-cp export");
        assert!(
            export.status.success(),
            "{}",
            String::from_utf8_lossy(&export.stderr)
        );
        String::from_utf8(export.stdout).expect("UTF-8 JSON")
    }
}

pub struct DataPlane {
    pub proc: Proc,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl DataPlane {
    /// Starts a data plane and waits until `/ready` says it applied a configuration.
    pub fn start(control_plane: &str, node_id: &str) -> DataPlane {
        let dp = Self::spawn(control_plane, node_id, &[]);
        dp.wait_ready();
        dp
    }

    pub fn spawn(control_plane: &str, node_id: &str, extra: &[&str]) -> DataPlane {
        Self::spawn_on(control_plane, node_id, "127.0.0.1:0", extra)
    }

    /// Like `spawn`, with the proxy listening on `listen`.
    pub fn spawn_on(control_plane: &str, node_id: &str, listen: &str, extra: &[&str]) -> DataPlane {
        let mut args: Vec<String> = vec![
            "--control-plane".into(),
            control_plane.into(),
            "--listen".into(),
            listen.into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--node-id".into(),
            node_id.into(),
            "--threads".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = Proc::spawn("portico-dp", &args);
        let proxy = proc.listening("proxy");
        let admin = proc.listening("admin");
        // Pingora binds after the log line, on its own threads.
        wait_for("the admin listener", Duration::from_secs(20), || {
            std::net::TcpStream::connect(admin).ok()
        });
        DataPlane { proc, proxy, admin }
    }

    pub fn ready_status(&self) -> Option<u16> {
        http_get(self.admin, "localhost", "/ready")
            .ok()
            .map(|r| r.status)
    }

    /// Waits for `/ready` and for the proxy listener, which Pingora binds
    /// on its own thread.
    pub fn wait_ready(&self) {
        wait_for("data plane /ready", Duration::from_secs(20), || {
            (self.ready_status() == Some(200)).then_some(())
        });
        wait_for("the proxy listener", Duration::from_secs(20), || {
            std::net::TcpStream::connect(self.proxy).ok()
        });
    }

    /// The admin `/config` view: the routes served now, with their settings.
    pub fn config(&self) -> serde_json::Value {
        let body = http_get(self.admin, "localhost", "/config")
            .expect("GET /config")
            .body;
        serde_json::from_str(&body).expect("config json")
    }

    /// The admin `/debug/counts` view: client connections, requests in
    /// flight, runtime state per route.
    pub fn counts(&self) -> serde_json::Value {
        let body = http_get(self.admin, "localhost", "/debug/counts")
            .expect("GET /debug/counts")
            .body;
        serde_json::from_str(&body).expect("counts json")
    }

    pub fn get(&self, host: &str, path: &str) -> crate::HttpResponse {
        http_get(self.proxy, host, path).expect("request through the data plane")
    }
}

/// A temporary directory removed on drop, without another dependency.
pub mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    static NEXT: AtomicU64 = AtomicU64::new(0);

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> TempDir {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).expect("creating a temp dir");
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
