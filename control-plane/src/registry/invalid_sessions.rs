//! Guessing session ids: every command whose session is not found counts
//! against its address, and an address past the limit has its session
//! commands refused for the rest of the window (docs/SECURITY.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Invalid session ids one address may send per window, by default.
pub const LIMIT: u32 = 100;
/// How long the count runs, and how long an address past it is refused.
pub const WINDOW: Duration = Duration::from_secs(10);

pub struct InvalidSessions {
    by_address: Mutex<HashMap<IpAddr, Count>>,
    /// Invalid ids one address may send per window.
    limit: u32,
}

impl Default for InvalidSessions {
    fn default() -> Self {
        InvalidSessions::new(LIMIT)
    }
}

struct Count {
    since: Instant,
    invalid: u32,
}

/// What one more invalid id from an address means.
#[derive(Debug, PartialEq, Eq)]
pub enum Counted {
    Within,
    /// This one reached the limit: worth one warning.
    JustOver,
    Over,
}

impl InvalidSessions {
    pub fn new(limit: u32) -> InvalidSessions {
        InvalidSessions {
            by_address: Mutex::default(),
            limit,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether `address` sent more invalid ids than allowed in its window.
    pub fn refused(&self, address: IpAddr, now: Instant) -> bool {
        let by_address = self.by_address.lock();
        by_address
            .get(&address)
            .is_some_and(|c| now.duration_since(c.since) < WINDOW && c.invalid >= self.limit)
    }

    /// Counts one invalid id from `address`.
    pub fn record(&self, address: IpAddr, now: Instant) -> Counted {
        let mut by_address = self.by_address.lock();
        // Addresses whose window ended are forgotten as others come, so the
        // map holds only the last window's guessers.
        if by_address.len() > 1024 {
            by_address.retain(|_, c| now.duration_since(c.since) < WINDOW);
        }
        let count = by_address.entry(address).or_insert(Count {
            since: now,
            invalid: 0,
        });
        if now.duration_since(count.since) >= WINDOW {
            *count = Count {
                since: now,
                invalid: 0,
            };
        }
        count.invalid += 1;
        match count.invalid {
            n if n < self.limit => Counted::Within,
            n if n == self.limit => Counted::JustOver,
            _ => Counted::Over,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_the_limit_is_refused_until_its_window_ends() {
        let limiter = InvalidSessions::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 1..LIMIT {
            assert_eq!(limiter.record(a, start), Counted::Within);
        }
        assert!(!limiter.refused(a, start));
        assert_eq!(limiter.record(a, start), Counted::JustOver);
        assert!(limiter.refused(a, start));
        assert!(!limiter.refused(b, start), "other addresses are not");
        assert_eq!(limiter.record(a, start), Counted::Over);
        let later = start + WINDOW;
        assert!(!limiter.refused(a, later));
        assert_eq!(limiter.record(a, later), Counted::Within);
    }
}
