//! Durations as services and operators write them: `30s`, `1m`, `1h30m`,
//! `500ms`, or a bare integer of seconds.

use std::time::Duration;

/// Parses a duration; the message names what was wrong, the caller names the field.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
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
        return checked_positive(raw, Duration::from_secs(secs));
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
    checked_positive(raw, total)
}

fn checked_positive(raw: &str, d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("duration \"{raw}\" must be positive"))
    } else if d > Duration::from_secs(365 * 24 * 3600) {
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
