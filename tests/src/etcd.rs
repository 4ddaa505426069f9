//! A real etcd on loopback (Debian's `etcd-server`), one member, its data in
//! a temporary directory; stopped and started again on the same ports.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::dns::free_port;
use crate::process::{tempdir::TempDir, Proc};
use crate::tls::Pki;
use crate::{http_get, wait_for};

pub struct Etcd {
    pub proc: Proc,
    client: SocketAddr,
    peer: SocketAddr,
    dir: TempDir,
    /// With TLS: its PKI (server certificate for 127.0.0.1, client
    /// certificates required).
    tls: Option<Pki>,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_with(None)
    }

    /// An etcd serving TLS on its client port and requiring client
    /// certificates signed by the same CA (`tls()` has them).
    pub fn start_tls() -> Etcd {
        let dir = TempDir::new("portico-etcd-tls");
        let pki = Pki::generate(dir.path(), false);
        Self::start_with(Some((dir, pki)))
    }

    fn start_with(tls: Option<(TempDir, Pki)>) -> Etcd {
        let (dir, tls) = match tls {
            Some((dir, pki)) => (dir, Some(pki)),
            None => (TempDir::new("portico-etcd"), None),
        };
        let client = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let peer = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proc = Self::spawn(&dir, client, peer, tls.as_ref());
        let etcd = Etcd {
            proc,
            client,
            peer,
            dir,
            tls,
        };
        etcd.wait_healthy();
        etcd
    }

    /// The PKI of a TLS etcd.
    pub fn tls(&self) -> Option<&Pki> {
        self.tls.as_ref()
    }

    fn spawn(dir: &TempDir, client: SocketAddr, peer: SocketAddr, tls: Option<&Pki>) -> Proc {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (client, peer) = (format!("{scheme}://{client}"), format!("http://{peer}"));
        let mut args: Vec<String> = [
            "--name",
            "portico-test",
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("portico-test={peer}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(pki) = tls {
            for (flag, path) in [
                ("--cert-file", &pki.server_cert),
                ("--key-file", &pki.server_key),
                ("--trusted-ca-file", &pki.ca),
            ] {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
            args.push("--client-cert-auth".into());
        }
        Proc::spawn_program(Path::new("etcd"), "etcd", &args, &[])
    }

    fn wait_healthy(&self) {
        wait_for("etcd /health", Duration::from_secs(20), || {
            let body = match &self.tls {
                None => http_get(self.client, "localhost", "/health").ok()?.body,
                Some(pki) => {
                    let out = std::process::Command::new("curl")
                        .args(["-s", "--max-time", "2", "--cacert"])
                        .arg(&pki.ca)
                        .arg("--cert")
                        .arg(&pki.client_cert)
                        .arg("--key")
                        .arg(&pki.client_key)
                        .arg(format!("{}/health", self.url()))
                        .output()
                        .ok()?;
                    String::from_utf8_lossy(&out.stdout).into_owned()
                }
            };
            body.contains("\"health\":\"true\"").then_some(())
        });
    }

    /// `portico-cp` flags for a replica on `prefix` of this etcd, with an
    /// apply timeout a loaded test machine never reaches (so every `OK`
    /// waited for the whole fleet).
    pub fn replica_args(&self, prefix: &str) -> Vec<String> {
        let url = self.url();
        [
            "--store",
            "etcd",
            "--etcd-endpoints",
            &url,
            "--etcd-prefix",
            prefix,
        ]
        .into_iter()
        .chain(["--apply-timeout", "20s"])
        .map(String::from)
        .collect()
    }

    /// `n` replicas on `prefix`.
    pub fn replicas(&self, prefix: &str, n: usize) -> Vec<crate::ControlPlane> {
        let args = self.replica_args(prefix);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (0..n)
            .map(|_| crate::ControlPlane::start_with(&args))
            .collect()
    }

    /// Every key and value under `prefix` (plain-text etcd only), through
    /// etcd's JSON gateway.
    pub fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({"key": b64(prefix.as_bytes()), "range_end": b64(&end)});
        let reply = self.gateway("/v3/kv/range", &body);
        reply["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| (unb64(&kv["key"]), unb64(&kv["value"])))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes `key` (plain-text etcd only).
    pub fn put(&self, key: &str, value: &str) {
        let body = serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())});
        self.gateway("/v3/kv/put", &body);
    }

    /// Deletes `key` (plain-text etcd only).
    pub fn delete(&self, key: &str) {
        self.gateway(
            "/v3/kv/deleterange",
            &serde_json::json!({"key": b64(key.as_bytes())}),
        );
    }

    fn gateway(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let reply = crate::http_post(self.client, path, &body.to_string()).expect("etcd's gateway");
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        serde_json::from_str(&reply.body).expect("etcd's JSON")
    }

    /// The client url the control plane dials.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same ports and data.
    pub fn start_again(&mut self) {
        self.proc = Self::spawn(&self.dir, self.client, self.peer, self.tls.as_ref());
        self.wait_healthy();
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(value: &serde_json::Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap_or_default())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
