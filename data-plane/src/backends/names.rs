//! Backend names and their current addresses: one `Name` per host and port,
//! shared by every route that uses it and swapped whole when a lookup
//! changes it, so a request reads one consistent list without waiting.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use portico_proto::BackendUrl;

/// What is known of a name now.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Sorted and without repeats, so an answer in another order is no change.
    pub addrs: Arc<[SocketAddr]>,
    /// Bumped whenever `addrs` changes; per-address state follows it.
    pub generation: u64,
    /// The last lookup that gave addresses.
    pub resolved_at: Option<SystemTime>,
    last_success: Option<Instant>,
    /// Why the last lookup failed, while it keeps failing.
    pub error: Option<String>,
    /// Serving the addresses of an earlier lookup because the last ones failed.
    pub stale: bool,
}

/// What one lookup changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Same addresses (or still none).
    Same,
    /// Different addresses.
    Moved,
    /// The lookup failed; the last good addresses are kept.
    KeptStale,
    /// The lookup failed beyond the grace: the addresses are dropped.
    Dropped,
    /// The lookup failed for a name that has no addresses yet.
    StillFailing,
}

/// A backend's host and port with its current addresses. An IP address is
/// its own answer and is never looked up.
#[derive(Debug)]
pub struct Name {
    pub host: String,
    pub port: u16,
    state: ArcSwap<Resolved>,
    /// When the next lookup is due (set by each lookup).
    due: Mutex<Instant>,
}

impl Name {
    fn new(host: &str, port: u16) -> Name {
        let literal = host.parse::<IpAddr>().ok();
        let state = Resolved {
            addrs: literal
                .map(|ip| SocketAddr::new(ip, port))
                .into_iter()
                .collect(),
            generation: u64::from(literal.is_some()),
            ..Resolved::default()
        };
        Name {
            host: host.to_string(),
            port,
            state: ArcSwap::from_pointee(state),
            due: Mutex::new(Instant::now()),
        }
    }

    /// An IP address, not a name.
    pub fn is_literal(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    pub fn current(&self) -> arc_swap::Guard<Arc<Resolved>> {
        self.state.load()
    }

    /// Never resolved so far (a literal always is).
    pub fn pending(&self) -> bool {
        let s = self.state.load();
        s.addrs.is_empty() && s.error.is_none()
    }

    pub fn due(&self) -> Instant {
        *self.due.lock()
    }

    /// A lookup answered `ips`; the next one is due after `next`.
    pub fn succeeded(&self, ips: impl IntoIterator<Item = IpAddr>, next: Duration) -> Change {
        let mut addrs: Vec<SocketAddr> = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, self.port))
            .collect();
        addrs.sort();
        addrs.dedup();
        let old = self.state.load_full();
        let moved = *old.addrs != *addrs;
        self.state.store(Arc::new(Resolved {
            generation: old.generation + u64::from(moved),
            addrs: addrs.into(),
            resolved_at: Some(SystemTime::now()),
            last_success: Some(Instant::now()),
            error: None,
            stale: false,
        }));
        *self.due.lock() = Instant::now() + next;
        if moved {
            Change::Moved
        } else {
            Change::Same
        }
    }

    /// A lookup failed with `error`: the last good addresses stay for
    /// `grace` after the last success, then go.
    pub fn failed(&self, error: String, grace: Duration, next: Duration) -> Change {
        let old = self.state.load_full();
        let within_grace = old.last_success.is_some_and(|t| t.elapsed() < grace);
        let (addrs, change) = if old.addrs.is_empty() {
            (old.addrs.clone(), Change::StillFailing)
        } else if within_grace {
            (old.addrs.clone(), Change::KeptStale)
        } else {
            (Arc::from(Vec::new()), Change::Dropped)
        };
        self.state.store(Arc::new(Resolved {
            generation: old.generation + u64::from(change == Change::Dropped),
            stale: change == Change::KeptStale,
            addrs,
            error: Some(error),
            ..(*old).clone()
        }));
        *self.due.lock() = Instant::now() + next;
        change
    }
}

/// Every name some table uses, by host and port. The tables hold the
/// `Arc`s; a name no table holds any more is forgotten.
#[derive(Default)]
pub struct Names {
    map: Mutex<HashMap<(String, u16), Weak<Name>>>,
    /// Names created since the refresher last looked.
    pub added: tokio::sync::Notify,
}

impl Names {
    /// The name of `url`'s host and port, created (unresolved) if new.
    pub fn get(&self, url: &BackendUrl) -> Arc<Name> {
        let mut map = self.map.lock();
        let key = (url.host.clone(), url.port);
        if let Some(name) = map.get(&key).and_then(Weak::upgrade) {
            return name;
        }
        let name = Arc::new(Name::new(&url.host, url.port));
        map.insert(key, Arc::downgrade(&name));
        if !name.is_literal() {
            self.added.notify_one();
        }
        name
    }

    /// The names still in use that need lookups; forgets the others.
    pub fn live(&self) -> Vec<Arc<Name>> {
        let mut map = self.map.lock();
        map.retain(|_, w| w.strong_count() > 0);
        map.values()
            .filter_map(Weak::upgrade)
            .filter(|n| !n.is_literal())
            .collect()
    }

    /// Names some table holds (IP addresses included).
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> BackendUrl {
        BackendUrl::parse(s).unwrap()
    }

    const NEXT: Duration = Duration::from_secs(5);

    #[test]
    fn a_literal_is_its_own_answer() {
        let names = Names::default();
        let n = names.get(&url("http://127.0.0.2:81"));
        assert!(n.is_literal());
        assert_eq!(&*n.current().addrs, &["127.0.0.2:81".parse().unwrap()]);
        assert!(!n.pending());
        assert!(names.live().is_empty(), "literals need no lookups");
    }

    #[test]
    fn names_are_shared_and_forgotten_when_unused() {
        let names = Names::default();
        let a = names.get(&url("http://app:80"));
        let b = names.get(&url("https://app:80"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.pending());
        assert_eq!(names.live().len(), 1);
        drop((a, b));
        assert!(names.live().is_empty());
        assert_eq!(names.len(), 0);
    }

    #[test]
    fn answers_in_another_order_change_nothing() {
        let n = Name::new("app", 80);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(n.succeeded([b, a], NEXT), Change::Moved);
        let g = n.current().generation;
        assert_eq!(n.succeeded([a, b, a], NEXT), Change::Same);
        assert_eq!(n.current().generation, g);
        assert_eq!(n.current().addrs.len(), 2);
        assert_eq!(n.succeeded([b], NEXT), Change::Moved);
        assert_eq!(n.current().generation, g + 1);
    }

    #[test]
    fn a_failing_name_keeps_its_addresses_for_the_grace_then_drops_them() {
        let n = Name::new("app", 80);
        assert_eq!(
            n.failed("no such name".into(), NEXT, NEXT),
            Change::StillFailing
        );
        assert!(n.current().addrs.is_empty());
        assert!(!n.pending(), "a failed lookup is an answer");

        n.succeeded(["10.0.0.1".parse().unwrap()], NEXT);
        let g = n.current().generation;
        assert_eq!(n.failed("timeout".into(), NEXT, NEXT), Change::KeptStale);
        let s = n.current();
        assert!(s.stale);
        assert_eq!(s.addrs.len(), 1);
        assert_eq!(s.error.as_deref(), Some("timeout"));
        assert_eq!(s.generation, g);

        assert_eq!(
            n.failed("timeout".into(), Duration::ZERO, NEXT),
            Change::Dropped
        );
        let s = n.current();
        assert!(s.addrs.is_empty() && !s.stale);
        assert_eq!(s.generation, g + 1);
        assert!(s.resolved_at.is_some(), "when it last resolved stays known");

        assert_eq!(
            n.succeeded(["10.0.0.1".parse().unwrap()], NEXT),
            Change::Moved
        );
        assert!(n.current().error.is_none());
    }
}
