//! Durations as services and operators write them: `30s`, `1m`, `1h30m`,
//! `500ms`, or a bare integer of seconds.

use std::time::Duration;

/// Parses a duration; the message names what was wrong, the caller names the field.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(raw)?;
    if d.is_zero() {
        return Err(format!("duration \"{raw}\" must be positive"));
    }
    Ok(d)
}

/// Like [`parse_duration`], but zero (`0`, `0s`) is allowed: for waits that
/// may be skipped, such as a shutdown delay.
pub fn parse_duration_or_zero(raw: &str) -> Result<Duration, String> {
    if raw.is_empty() {
        return Err("empty duration".into());
    }
    if raw.starts_with('-') {
        return Err(format!("negative duration \"{raw}\""));
    }
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = raw
            .parse()
            .map_err(|_| format!("duration \"{raw}\" is too large"))?;
        return at_most_a_year(raw, Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = raw;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration \"{raw}\""));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration \"{raw}\" is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("invalid duration \"{raw}\": units are ms, s, m, h")),
        };
        rest = &rest[unit_len..];
        let part = value
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("duration \"{raw}\" is too large"))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| format!("duration \"{raw}\" is too large"))?;
    }
    at_most_a_year(raw, total)
}

fn at_most_a_year(raw: &str, d: Duration) -> Result<Duration, String> {
    if d > Duration::from_secs(365 * 24 * 3600) {
        Err(format!("duration \"{raw}\" is longer than a year"))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("30s", 30_000),
            ("1m", 60_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("30", 30_000),
            ("1m30s", 90_000),
        ];
        for (raw, ms) in cases {
            assert_eq!(parse_duration(raw), Ok(Duration::from_millis(ms)), "{raw}");
        }
    }

    #[test]
    fn zero_where_allowed() {
        for raw in ["0", "0s", "0ms", "00s"] {
            assert_eq!(parse_duration_or_zero(raw), Ok(Duration::ZERO), "{raw}");
        }
        assert_eq!(parse_duration_or_zero("2s"), Ok(Duration::from_secs(2)));
        for raw in ["", "0x", "-1s", "s", "0s5"] {
            assert!(parse_duration_or_zero(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn refuses_zero_negative_and_junk() {
        for raw in [
            "",
            "0",
            "0s",
            "-5s",
            "-1",
            "5x",
            "s",
            "1.5s",
            "1 s",
            "99999999999999999999",
        ] {
            assert!(parse_duration(raw).is_err(), "{raw}");
        }
    }
}
