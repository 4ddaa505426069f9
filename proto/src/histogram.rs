//! The latency histogram both planes share: log-scale buckets 10 % wide from
//! 0.01 ms to about 10 minutes, so data planes send sparse bucket counts and
//! the control plane computes percentiles from the merged counts.

/// Buckets grow by this factor; a percentile is exact to within it.
pub const GROWTH: f64 = 1.1;
const FIRST_MS: f64 = 0.01;
pub const BUCKETS: usize = 190;

/// The bucket a latency falls in.
pub fn bucket(ms: f64) -> usize {
    if ms <= FIRST_MS {
        return 0;
    }
    let i = ((ms / FIRST_MS).ln() / GROWTH.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

/// The upper bound of a bucket, in milliseconds.
pub fn upper_ms(bucket: usize) -> f64 {
    FIRST_MS * GROWTH.powi(bucket as i32)
}

/// The `q`-quantile (0..=1) of a histogram given as (bucket, count) pairs,
/// reported as its bucket's upper bound; 0 when empty.
pub fn quantile(counts: &[(usize, u64)], q: f64) -> f64 {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let mut seen = 0;
    for (b, n) in sorted {
        seen += n;
        if seen >= rank {
            return upper_ms(b);
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_ten_percent() {
        for ms in [0.02, 0.5, 1.0, 3.3, 47.0, 1000.0, 60_000.0] {
            let b = bucket(ms);
            assert!(
                upper_ms(b) >= ms * 0.999 && upper_ms(b) <= ms * GROWTH * 1.001,
                "{ms} -> {}",
                upper_ms(b)
            );
        }
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(1e12), BUCKETS - 1);
    }

    #[test]
    fn quantiles_from_counts() {
        // 99 fast requests at ~1 ms and one slow one at ~100 ms.
        let counts = vec![(bucket(1.0), 99), (bucket(100.0), 1)];
        assert!((quantile(&counts, 0.5) - 1.0).abs() < 0.11);
        assert!((quantile(&counts, 0.99) - 1.0).abs() < 0.11);
        assert!((quantile(&counts, 1.0) - 100.0).abs() < 11.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
