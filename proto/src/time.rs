//! Wall-clock times as they cross the wire and the store (Unix milliseconds)
//! and as people read them (RFC 3339).

use std::time::{Duration, SystemTime};

/// Milliseconds since the Unix epoch; 0 for a time before it.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The time `ms` milliseconds after the Unix epoch (negative counts as 0).
pub fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// `t` cut to whole milliseconds, the precision times are stored and sent
/// with, so a time compares equal after a round trip.
pub fn whole_ms(t: SystemTime) -> SystemTime {
    from_unix_ms(unix_ms(t))
}

/// RFC 3339 in UTC, to the second: what services and operators read.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 in UTC, to the millisecond: for logs.
pub fn rfc3339_millis(t: SystemTime) -> String {
    rfc3339_millis_display(t).to_string()
}

/// The same text, written where it is displayed (no `String` of its own).
pub fn rfc3339_millis_display(t: SystemTime) -> impl std::fmt::Display {
    humantime::format_rfc3339_millis(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_clamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_unix_ms(unix_ms(t)), t);
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(from_unix_ms(-5), SystemTime::UNIX_EPOCH);
    }
}
