//! Per-route counters in their wire form, `v1::RouteStats`: what a data
//! plane accumulates between reports and what the control plane sums.

use crate::v1::RouteStats;

/// Adds `more` to `total` (counts, bytes, status codes, latency buckets).
pub fn add(total: &mut RouteStats, more: &RouteStats) {
    total.requests += more.requests;
    total.errors += more.errors;
    total.bytes_sent += more.bytes_sent;
    total.bytes_received += more.bytes_received;
    total.latency_sum_ms += more.latency_sum_ms;
    for (code, n) in &more.status_codes {
        *total.status_codes.entry(*code).or_default() += n;
    }
    for (bucket, n) in &more.latency_buckets {
        *total.latency_buckets.entry(*bucket).or_default() += n;
    }
}
