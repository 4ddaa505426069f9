//! A real ACME server on loopback: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS server answering 127.0.0.1 for every
//! name, validating HTTP-01 on the data plane's plain port.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::dns::{free_port, MockDns};
use crate::process::{tempdir::TempDir, Proc};
use crate::tls::Pki;
use crate::wait_for;

pub struct Pebble {
    pub proc: Proc,
    pub dns: MockDns,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA that signed Pebble's own HTTPS certificate (for --acme-ca-root).
    pub https_ca: PathBuf,
    management: SocketAddr,
    _dir: TempDir,
}

impl Pebble {
    /// Pebble validating HTTP-01 on `http_port`; `env` tunes it (e.g.
    /// `PEBBLE_VA_NOSLEEP`).
    pub fn start(http_port: u16, env: &[(&str, &str)]) -> Pebble {
        let dir = TempDir::new("portico-pebble");
        let pki = Pki::generate(dir.path(), false);
        // Every name the CA validates is this machine.
        let dns = MockDns::start_answering("127.0.0.1");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": pki.server_cert,
                "privateKey": pki.server_key,
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("PEBBLE_WFE_NONCEREJECT", "0"));
        let proc = Proc::spawn_program(
            Path::new("pebble"),
            "pebble",
            &[
                "-config".to_string(),
                config_path.display().to_string(),
                "-dnsserver".to_string(),
                dns.addr.to_string(),
            ],
            &env,
        );
        wait_for("pebble", Duration::from_secs(10), || {
            TcpStream::connect(listen).ok()?;
            TcpStream::connect(management).ok()
        });
        Pebble {
            proc,
            dns,
            directory: format!("https://{listen}/dir"),
            https_ca: pki.ca.clone(),
            management,
            _dir: dir,
        }
    }

    /// The root that signs what Pebble issues (it makes a new one each run),
    /// written to `path`.
    pub fn write_root(&self, path: &Path) {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "10", "--cacert"])
            .arg(&self.https_ca)
            .arg(format!("https://{}/roots/0", self.management))
            .output()
            .expect("running curl");
        assert!(
            out.status.success(),
            "pebble /roots/0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(path, out.stdout).unwrap();
    }

    /// The control plane's flags for this server.
    pub fn cp_args(&self) -> Vec<String> {
        vec![
            "--acme-directory".into(),
            self.directory.clone(),
            "--acme-email".into(),
            "ops@acme.test".into(),
            "--acme-ca-root".into(),
            self.https_ca.display().to_string(),
        ]
    }
}
