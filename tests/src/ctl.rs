//! `porticoctl` as the operator runs it: one-shot subcommands and the
//! `watch --json` stream, against a control plane under test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use crate::process::bin;
use crate::ControlPlane;

/// Runs `porticoctl <args>` and returns its standard output.
pub fn ctl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = Command::new(bin("porticoctl"))
        .args(["--control-plane", &cp.grpc_url()])
        .args(args)
        .output()
        .expect("running porticoctl");
    assert!(
        out.status.success(),
        "porticoctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `porticoctl dataplanes --json`.
pub fn dataplanes(cp: &ControlPlane) -> Vec<Value> {
    serde_json::from_str::<Value>(&ctl(cp, &["dataplanes", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `cp` lists every one of `nodes` as connected (to any
/// replica, with replicas sharing etcd).
pub fn wait_fleet(cp: &ControlPlane, nodes: &[&str]) {
    crate::wait_for(
        "the whole fleet on the control plane",
        std::time::Duration::from_secs(10),
        || {
            let planes = dataplanes(cp);
            nodes
                .iter()
                .all(|n| {
                    planes
                        .iter()
                        .any(|p| p["node_id"] == *n && p["state"] == "connected")
                })
                .then_some(())
        },
    );
}

/// `porticoctl watch --json`, keeping the events of one kind (`push`,
/// `ack`, `member`, …); killed when dropped.
pub struct Watch {
    child: Child,
    pub events: mpsc::Receiver<Value>,
}

impl Watch {
    pub fn start(cp: &ControlPlane, kind: &'static str) -> Watch {
        let mut child = Command::new(bin("porticoctl"))
            .args(["--control-plane", &cp.grpc_url(), "watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting porticoctl watch");
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == kind && tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Watch { child, events }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
