//! A real etcd on loopback (Debian's `etcd-server`), one member, its data in
//! a temporary directory; stopped and started again on the same ports.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::dns::free_port;
use crate::process::{tempdir::TempDir, Proc};
use crate::{http_get, wait_for};

pub struct Etcd {
    pub proc: Proc,
    client: SocketAddr,
    peer: SocketAddr,
    dir: TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = TempDir::new("portico-etcd");
        let client = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let peer = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proc = Self::spawn(&dir, client, peer);
        let etcd = Etcd {
            proc,
            client,
            peer,
            dir,
        };
        etcd.wait_healthy();
        etcd
    }

    fn spawn(dir: &TempDir, client: SocketAddr, peer: SocketAddr) -> Proc {
        let (client, peer) = (format!("http://{client}"), format!("http://{peer}"));
        let args: Vec<String> = [
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
        Proc::spawn_program(Path::new("etcd"), "etcd", &args, &[])
    }

    fn wait_healthy(&self) {
        wait_for("etcd /health", Duration::from_secs(20), || {
            http_get(self.client, "localhost", "/health")
                .ok()
                .filter(|r| r.body.contains("\"health\":\"true\""))
        });
    }

    /// The client url the control plane dials.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same ports and data.
    pub fn start_again(&mut self) {
        self.proc = Self::spawn(&self.dir, self.client, self.peer);
        self.wait_healthy();
    }
}
