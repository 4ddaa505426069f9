//! The control plane's Prometheus metrics (`GET /metrics` on its admin
//! listener): counters kept here as atomics, the rest read at scrape time
//! from the directory, the configuration and the publisher's fleet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use portico_proto::metrics::{render, AtomicHistogram, Family, Kind, Metric};
use portico_proto::v1;

use crate::protocol::parser::command_names;

pub static SESSIONS: Metric = Metric {
    name: "portico_sessions",
    help: "Sessions, by whether their home connection is open (state: connected, detached).",
    kind: Kind::Gauge,
    labels: &["state"],
};

pub static COMMANDS_TOTAL: Metric = Metric {
    name: "portico_commands_total",
    help: "Registry commands answered, by command and result (ok, error); a line naming no command counts as unknown.",
    kind: Kind::Counter,
    labels: &["command", "result"],
};

pub static CONFIG_VERSION: Metric = Metric {
    name: "portico_config_version",
    help: "The committed configuration version.",
    kind: Kind::Gauge,
    labels: &[],
};

pub static DATAPLANES: Metric = Metric {
    name: "portico_dataplanes",
    help: "Data planes by state: connected (and current), lagging (behind, or away within the fleet grace), gone (or stopped).",
    kind: Kind::Gauge,
    labels: &["state"],
};

pub static DATAPLANE_ACKED_VERSION: Metric = Metric {
    name: "portico_dataplane_acked_version",
    help: "The last version each data plane (not gone) acknowledged.",
    kind: Kind::Gauge,
    labels: &["node_id"],
};

pub static APPLY_DURATION_SECONDS: Metric = Metric {
    name: "portico_apply_duration_seconds",
    help: "CONFIG_APPLY received to OK sent.",
    kind: Kind::Histogram,
    labels: &[],
};

pub static COMMIT_DURATION_SECONDS: Metric = Metric {
    name: "portico_commit_duration_seconds",
    help: "One commit, its fsync included.",
    kind: Kind::Histogram,
    labels: &[],
};

pub static INVALID_SESSIONS_TOTAL: Metric = Metric {
    name: "portico_invalid_sessions_total",
    help: "Commands with a session id that names no session (answered `invalid session`), and those refused because their address sent too many.",
    kind: Kind::Counter,
    labels: &["result"],
};

pub static SITE_ERRORS_TOTAL: Metric = Metric {
    name: "portico_site_errors_total",
    help: "Saves of a site file (`--sites`) that were not applied: a format error, a bad value, a host owned by another service, a name taken; `site` is the file's name.",
    kind: Kind::Counter,
    labels: &["site"],
};

/// Every family the control plane exports, in scrape order.
pub static METRICS: [&Metric; 9] = [
    &SESSIONS,
    &COMMANDS_TOTAL,
    &CONFIG_VERSION,
    &DATAPLANES,
    &DATAPLANE_ACKED_VERSION,
    &APPLY_DURATION_SECONDS,
    &COMMIT_DURATION_SECONDS,
    &INVALID_SESSIONS_TOTAL,
    &SITE_ERRORS_TOTAL,
];

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
    /// Site files not applied, by file.
    site_errors: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
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
            site_errors: Default::default(),
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

    /// A save of site file `site` was not applied.
    pub fn site_error(&self, site: &str) {
        *self.site_errors.lock().entry(site.to_string()).or_default() += 1;
    }

    /// A session lost (`true`) or found (`false`) its home connection.
    pub fn detached(&self, detached: bool) {
        self.detached
            .fetch_add(if detached { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// The text exposition, with the facts only the caller can read.
    pub fn scrape(&self, sessions: usize, version: u64, planes: &[v1::DataPlaneInfo]) -> String {
        let detached = self.detached.load(Ordering::Relaxed).max(0) as usize;
        let mut by_state = Family::new(&SESSIONS);
        by_state.add(
            &[("state", "connected")],
            sessions.saturating_sub(detached) as f64,
        );
        by_state.add(&[("state", "detached")], detached.min(sessions) as f64);
        let mut commands = Family::new(&COMMANDS_TOTAL);
        for (name, [ok, error]) in &self.commands {
            for (result, n) in [("ok", ok), ("error", error)] {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    commands.add(&[("command", name), ("result", result)], n as f64);
                }
            }
        }
        let mut config = Family::new(&CONFIG_VERSION);
        config.add(&[], version as f64);
        let mut fleet = Family::new(&DATAPLANES);
        let mut acked = Family::new(&DATAPLANE_ACKED_VERSION);
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
        let mut apply = Family::new(&APPLY_DURATION_SECONDS);
        apply.add_histogram(&[], &self.apply);
        let mut commit = Family::new(&COMMIT_DURATION_SECONDS);
        commit.add_histogram(&[], &self.commit);
        let mut invalid = Family::new(&INVALID_SESSIONS_TOTAL);
        for (result, n) in ["answered", "refused"].iter().zip(&self.invalid_sessions) {
            invalid.add(&[("result", result)], n.load(Ordering::Relaxed) as f64);
        }
        let mut sites = Family::new(&SITE_ERRORS_TOTAL);
        for (site, n) in self.site_errors.lock().iter() {
            sites.add(&[("site", site)], *n as f64);
        }
        render(vec![
            by_state, commands, config, fleet, acked, apply, commit, invalid, sites,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_family_is_what_a_busy_scrape_renders() {
        let metrics = Metrics::default();
        metrics.command(Some("PING"), true);
        metrics.invalid_sessions[0].fetch_add(1, Ordering::Relaxed);
        metrics.site_error("shop.yaml");
        let plane = v1::DataPlaneInfo {
            node_id: "dp-1".into(),
            state: "connected".into(),
            ..Default::default()
        };
        let text = metrics.scrape(1, 3, &[plane]);
        let rendered: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|name| name.starts_with("portico_"))
            .collect();
        let declared: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        assert_eq!(rendered, declared, "{text}");
    }
}
