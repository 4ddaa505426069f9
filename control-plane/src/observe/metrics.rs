//! The control plane's Prometheus metrics (`GET /metrics` on its admin
//! listener): counters kept here as atomics, the rest read at scrape time
//! from the directory, the configuration and the publisher's fleet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use portico_proto::metrics::{render, AtomicHistogram, Family, Kind};
use portico_proto::v1;

use crate::protocol::parser::command_names;

/// A command that did not parse is counted under this name.
const UNKNOWN: &str = "unknown";

pub struct Metrics {
    /// Sessions without a home connection.
    detached: AtomicI64,
    /// (command, [ok, error]), in the protocol's order.
    commands: Vec<(&'static str, [AtomicU64; 2])>,
    index: HashMap<&'static str, usize>,
    /// CONFIG_APPLY received to `OK` sent.
    pub apply: AtomicHistogram,
    /// A commit, its fsync included.
    pub commit: AtomicHistogram,
    /// Commands whose session id was not found, and those refused because
    /// their address sent too many such ids.
    pub invalid_sessions: [AtomicU64; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        let commands: Vec<_> = command_names()
            .chain([UNKNOWN])
            .map(|n| (n, [AtomicU64::new(0), AtomicU64::new(0)]))
            .collect();
        let index = commands
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (*n, i))
            .collect();
        Metrics {
            detached: AtomicI64::new(0),
            commands,
            index,
            apply: AtomicHistogram::default(),
            commit: AtomicHistogram::default(),
            invalid_sessions: Default::default(),
        }
    }
}

impl Metrics {
    /// A command answered; `name` as the protocol spells it, or `None` for
    /// a line that did not parse.
    pub fn command(&self, name: Option<&str>, ok: bool) {
        let i = self.index[name
            .filter(|n| self.index.contains_key(n))
            .unwrap_or(UNKNOWN)];
        self.commands[i].1[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// A session lost (`true`) or found (`false`) its home connection.
    pub fn detached(&self, detached: bool) {
        self.detached
            .fetch_add(if detached { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// The text exposition, with the facts only the caller can read.
    pub fn scrape(&self, sessions: usize, version: u64, planes: &[v1::DataPlaneInfo]) -> String {
        let detached = self.detached.load(Ordering::Relaxed).max(0) as usize;
        let mut by_state = Family::new(
            "portico_sessions",
            "Sessions, by whether their home connection is open.",
            Kind::Gauge,
        );
        by_state.add(
            &[("state", "connected")],
            sessions.saturating_sub(detached) as f64,
        );
        by_state.add(&[("state", "detached")], detached.min(sessions) as f64);
        let mut commands = Family::new(
            "portico_commands_total",
            "Registry commands answered, by command and result.",
            Kind::Counter,
        );
        for (name, [ok, error]) in &self.commands {
            for (result, n) in [("ok", ok), ("error", error)] {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    commands.add(&[("command", name), ("result", result)], n as f64);
                }
            }
        }
        let mut config = Family::new(
            "portico_config_version",
            "The committed configuration version.",
            Kind::Gauge,
        );
        config.add(&[], version as f64);
        let mut fleet = Family::new(
            "portico_dataplanes",
            "Data planes: connected and current, lagging (behind, or away within the fleet grace), gone.",
            Kind::Gauge,
        );
        let mut acked = Family::new(
            "portico_dataplane_acked_version",
            "The last version each data plane acknowledged.",
            Kind::Gauge,
        );
        let mut counts = [0usize; 3];
        for p in planes {
            let state = match (p.state.as_str(), p.lag) {
                ("gone" | "stopped", _) => 2,
                ("connected" | "stopping", 0) => 0,
                _ => 1,
            };
            counts[state] += 1;
            if state < 2 {
                acked.add(&[("node_id", &p.node_id)], p.acked_version as f64);
            }
        }
        for (state, n) in ["connected", "lagging", "gone"].iter().zip(counts) {
            fleet.add(&[("state", state)], n as f64);
        }
        let mut apply = Family::new(
            "portico_apply_duration_seconds",
            "CONFIG_APPLY received to OK sent.",
            Kind::Histogram,
        );
        apply.add_histogram(&[], &self.apply);
        let mut commit = Family::new(
            "portico_commit_duration_seconds",
            "One commit, its fsync included.",
            Kind::Histogram,
        );
        commit.add_histogram(&[], &self.commit);
        let mut invalid = Family::new(
            "portico_invalid_sessions_total",
            "Commands with a session id that names no session (answered `invalid session`), and those refused because their address sent too many.",
            Kind::Counter,
        );
        for (result, n) in ["answered", "refused"].iter().zip(&self.invalid_sessions) {
            invalid.add(&[("result", result)], n.load(Ordering::Relaxed) as f64);
        }
        render(vec![
            by_state, commands, config, fleet, acked, apply, commit, invalid,
        ])
    }
}
