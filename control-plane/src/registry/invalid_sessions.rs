//! Guessing session ids: every command whose session is not found counts
//! against its address, and an address past the limit has its session
//! commands refused for the rest of the window (docs/SECURITY.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Invalid session ids one address may send per window.
pub const LIMIT: u32 = 100;
/// How long the count runs, and how long an address past it is refused.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct InvalidSessions {
    by_address: Mutex<HashMap<IpAddr, Count>>,
}

struct Count {
    since: Instant,
    invalid: u32,
}

/// What one more invalid id from an address means.
#[derive(Debug, PartialEq, Eq)]
pub enum Counted {
    Within,
    /// This one crossed the limit: worth one warning.
    JustOver,
    Over,
}

impl InvalidSessions {
    /// Whether `address` sent more invalid ids than allowed in its window.
    pub fn refused(&self, address: IpAddr, now: Instant) -> bool {
        let by_address = self.by_address.lock();
        by_address
            .get(&address)
            .is_some_and(|c| now.duration_since(c.since) < WINDOW && c.invalid > LIMIT)
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
            n if n <= LIMIT => Counted::Within,
            n if n == LIMIT + 1 => Counted::JustOver,
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
        for _ in 0..LIMIT {
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
