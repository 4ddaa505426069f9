//! One route's counters since the last telemetry report, kept as plain
//! numbers and short inline arrays (no hashing), so a request to a route
//! whose state has left the CPU cache touches two cache lines here.

use std::collections::HashMap;

use portico_proto::{histogram, v1};
use smallvec::SmallVec;

#[derive(Debug, Default)]
pub struct Window {
    requests: u64,
    errors: u64,
    bytes_sent: u64,
    bytes_received: u64,
    latency_sum_ms: f64,
    /// (status, count): a route answers with few distinct codes.
    codes: SmallVec<[(u16, u32); 4]>,
    /// Counts of consecutive latency buckets from `first_bucket` on; eight
    /// buckets (a factor of two) stay inline.
    latency: SmallVec<[u32; 8]>,
    first_bucket: u8,
    /// Refused by country (`geo_*`): (country, count); empty, no allocation,
    /// on routes without geo rules.
    geo_blocked: Vec<(String, u64)>,
}

// The bucket index is stored in a byte.
const _: () = assert!(histogram::BUCKETS <= 256);

impl Window {
    pub fn record(&mut self, status: Option<u16>, latency_ms: f64, sent: u64, received: u64) {
        self.requests += 1;
        if status.is_none_or(|s| s >= 500) {
            self.errors += 1;
        }
        if let Some(s) = status {
            match self.codes.iter_mut().find(|(code, _)| *code == s) {
                Some((_, n)) => *n += 1,
                None => self.codes.push((s, 1)),
            }
        }
        self.bytes_sent += sent;
        self.bytes_received += received;
        self.latency_sum_ms += latency_ms;
        self.count_latency(histogram::bucket(latency_ms) as u8);
    }

    pub fn geo_blocked(&mut self, country: &str) {
        match self.geo_blocked.iter_mut().find(|(c, _)| c == country) {
            Some((_, n)) => *n += 1,
            None => self.geo_blocked.push((country.to_string(), 1)),
        }
    }

    fn count_latency(&mut self, bucket: u8) {
        if self.latency.is_empty() {
            self.first_bucket = bucket;
        }
        if bucket < self.first_bucket {
            let missing = (self.first_bucket - bucket) as usize;
            self.latency.insert_many(0, std::iter::repeat_n(0, missing));
            self.first_bucket = bucket;
        }
        let i = (bucket - self.first_bucket) as usize;
        if i >= self.latency.len() {
            self.latency.resize(i + 1, 0);
        }
        self.latency[i] += 1;
    }

    /// The counters in their wire form, if there was traffic; they start
    /// again at zero, keeping their room.
    pub fn take(&mut self, route_id: &str) -> Option<v1::RouteStats> {
        if self.requests == 0 {
            return None;
        }
        let first = u32::from(self.first_bucket);
        let stats = v1::RouteStats {
            route_id: route_id.to_string(),
            requests: self.requests,
            errors: self.errors,
            status_codes: self
                .codes
                .iter()
                .map(|&(code, n)| (u32::from(code), u64::from(n)))
                .collect(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            latency_sum_ms: self.latency_sum_ms,
            geo_blocked: std::mem::take(&mut self.geo_blocked).into_iter().collect(),
            latency_buckets: self
                .latency
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, &n)| (first + i as u32, u64::from(n)))
                .collect::<HashMap<_, _>>(),
        };
        self.requests = 0;
        self.errors = 0;
        self.bytes_sent = 0;
        self.bytes_received = 0;
        self.latency_sum_ms = 0.0;
        self.codes.clear();
        self.latency.clear();
        Some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_codes_errors_bytes_and_latency_buckets_then_starts_again() {
        let mut w = Window::default();
        assert!(w.take("r1").is_none(), "no traffic, no report");
        w.record(Some(200), 1.0, 10, 1);
        w.record(Some(200), 1.0, 10, 1);
        w.record(Some(503), 50.0, 5, 0);
        w.record(None, 0.2, 0, 0);
        w.record(Some(404), 2000.0, 1, 1);
        let s = w.take("r1").unwrap();
        assert_eq!(s.route_id, "r1");
        assert_eq!((s.requests, s.errors), (5, 2));
        assert_eq!(
            s.status_codes,
            HashMap::from([(200, 2), (503, 1), (404, 1)])
        );
        assert_eq!((s.bytes_sent, s.bytes_received), (26, 3));
        assert!((s.latency_sum_ms - 2052.2).abs() < 1e-9);
        let want: HashMap<u32, u64> = [
            (histogram::bucket(1.0) as u32, 2),
            (histogram::bucket(50.0) as u32, 1),
            (histogram::bucket(0.2) as u32, 1),
            (histogram::bucket(2000.0) as u32, 1),
        ]
        .into();
        assert_eq!(s.latency_buckets, want);

        assert!(w.take("r1").is_none(), "taken means zero again");
        w.record(Some(201), 3.0, 0, 0);
        let s = w.take("r1").unwrap();
        assert_eq!(s.status_codes, HashMap::from([(201, 1)]));
        assert_eq!(
            s.latency_buckets,
            HashMap::from([(histogram::bucket(3.0) as u32, 1)])
        );
    }

    #[test]
    fn the_extreme_buckets_fit() {
        let mut w = Window::default();
        w.record(Some(200), 1e12, 0, 0);
        w.record(Some(200), 0.0, 0, 0);
        let s = w.take("r").unwrap();
        assert_eq!(
            s.latency_buckets,
            HashMap::from([(0, 1), (histogram::BUCKETS as u32 - 1, 1)])
        );
    }
}
