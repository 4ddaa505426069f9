//! The last hour of traffic per route and for the whole fleet, in 10 s
//! points, for the dashboard's charts. Bounded: a route with traffic keeps at
//! most 360 points of 16 bytes (5.6 KiB), dropped with the route.

use std::collections::{HashMap, VecDeque};

use portico_proto::histogram;
use serde_json::{json, Value};

/// Seconds one point covers.
pub const STEP_SECS: u64 = 10;
/// Points kept: one hour.
pub const POINTS: usize = 360;

/// One closed step: what was answered in it and how fast.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    pub requests: u32,
    pub errors: u32,
    pub p50_ms: f32,
    pub p99_ms: f32,
}

/// The step being filled: counts and the merged latency histogram of every
/// report in it, from every data plane.
#[derive(Debug, Default)]
struct Open {
    step: u64,
    requests: u64,
    errors: u64,
    buckets: HashMap<u32, u64>,
}

impl Open {
    fn close(&mut self) -> Point {
        let counts: Vec<(usize, u64)> =
            self.buckets.drain().map(|(b, n)| (b as usize, n)).collect();
        let point = Point {
            requests: self.requests.min(u32::MAX as u64) as u32,
            errors: self.errors.min(u32::MAX as u64) as u32,
            p50_ms: histogram::quantile(&counts, 0.5) as f32,
            p99_ms: histogram::quantile(&counts, 0.99) as f32,
        };
        self.requests = 0;
        self.errors = 0;
        point
    }
}

/// Closed points of consecutive steps ending just before `open.step`.
#[derive(Debug, Default)]
struct Ring {
    points: VecDeque<Point>,
    open: Open,
}

impl Ring {
    /// Closes the open step if `step` is later, filling skipped steps with
    /// empty points.
    fn advance(&mut self, step: u64) {
        if step <= self.open.step {
            return;
        }
        if self.open.step > 0 || self.open.requests > 0 {
            let closed = self.open.close();
            self.push(closed);
            let skipped = (step - self.open.step - 1).min(POINTS as u64);
            for _ in 0..skipped {
                self.push(Point::default());
            }
        }
        self.open.step = step;
    }

    fn push(&mut self, point: Point) {
        if self.points.len() == POINTS {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    fn add(&mut self, step: u64, requests: u64, errors: u64, buckets: &HashMap<u32, u64>) {
        self.advance(step);
        // A report for a step already closed (a late one) counts in the open one.
        self.open.requests += requests;
        self.open.errors += errors;
        for (b, n) in buckets {
            *self.open.buckets.entry(*b).or_default() += n;
        }
    }

    /// The closed points as of `now`, oldest first, each with its step.
    fn closed(&mut self, now: u64) -> impl Iterator<Item = (u64, Point)> + '_ {
        self.advance(now);
        let first = self.open.step.saturating_sub(self.points.len() as u64);
        self.points
            .iter()
            .enumerate()
            .map(move |(i, p)| (first + i as u64, *p))
    }
}

/// Every route's ring and the fleet's.
#[derive(Debug, Default)]
pub struct Series {
    routes: HashMap<String, Ring>,
    fleet: Ring,
}

/// The step a unix time in seconds falls in.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

impl Series {
    /// One route's counts from one report.
    pub fn record(&mut self, step: u64, route_id: &str, stats: &portico_proto::v1::RouteStats) {
        if stats.requests == 0 && stats.errors == 0 {
            return;
        }
        let ring = match self.routes.get_mut(route_id) {
            Some(ring) => ring,
            None => self.routes.entry(route_id.to_string()).or_default(),
        };
        ring.add(step, stats.requests, stats.errors, &stats.latency_buckets);
        self.fleet
            .add(step, stats.requests, stats.errors, &stats.latency_buckets);
    }

    pub fn forget(&mut self, route_id: &str) {
        self.routes.remove(route_id);
    }

    pub fn routes(&self) -> usize {
        self.routes.len()
    }

    /// A route's last hour as chart columns; empty for a route without traffic.
    pub fn route(&mut self, route_id: &str, now: u64) -> Value {
        match self.routes.get_mut(route_id) {
            Some(ring) => columns(ring.closed(now)),
            None => columns(std::iter::empty()),
        }
    }

    pub fn fleet(&mut self, now: u64) -> Value {
        columns(self.fleet.closed(now))
    }
}

/// Columns as uPlot takes them: `t` (unix seconds at the step's end),
/// `rps`, `error_rate` (errors per request), `p50_ms`, `p99_ms`.
fn columns(points: impl Iterator<Item = (u64, Point)>) -> Value {
    let (mut t, mut rps, mut error_rate, mut p50, mut p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (step, p) in points {
        t.push((step + 1) * STEP_SECS);
        rps.push(p.requests as f64 / STEP_SECS as f64);
        error_rate.push(if p.requests > 0 {
            p.errors as f64 / p.requests as f64
        } else {
            0.0
        });
        p50.push(p.p50_ms);
        p99.push(p.p99_ms);
    }
    json!({ "step_secs": STEP_SECS, "t": t, "rps": rps, "error_rate": error_rate, "p50_ms": p50, "p99_ms": p99 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_proto::v1::RouteStats;

    fn stats(requests: u64, errors: u64, latency_ms: f64) -> RouteStats {
        let mut s = RouteStats {
            requests,
            errors,
            ..Default::default()
        };
        s.latency_buckets
            .insert(histogram::bucket(latency_ms) as u32, requests);
        s
    }

    #[test]
    fn reports_fill_steps_and_percentiles_merge_across_planes() {
        let mut series = Series::default();
        // Step 100: two data planes, 9 fast requests and 1 slow one.
        series.record(100, "r1", &stats(9, 0, 2.0));
        series.record(100, "r1", &stats(1, 1, 300.0));
        // Step 101 has nothing; step 102 has 5.
        series.record(102, "r1", &stats(5, 0, 10.0));
        let view = series.route("r1", 103);
        assert_eq!(view["t"], json!([1010, 1020, 1030]));
        assert_eq!(view["rps"], json!([1.0, 0.0, 0.5]));
        assert_eq!(view["error_rate"], json!([0.1, 0.0, 0.0]));
        let p50 = view["p50_ms"][0].as_f64().unwrap();
        let p99 = view["p99_ms"][0].as_f64().unwrap();
        assert!((2.0..2.3).contains(&p50), "{p50}");
        assert!((300.0..331.0).contains(&p99), "{p99}");
        // The fleet is the sum of its routes.
        series.record(102, "r2", &stats(5, 0, 10.0));
        assert_eq!(series.fleet(103)["rps"], json!([1.0, 0.0, 1.0]));
        assert_eq!(series.route("r9", 103)["t"], json!([]));
    }

    #[test]
    fn a_ring_keeps_one_hour_and_a_long_gap_costs_at_most_that() {
        let mut series = Series::default();
        for step in 0..1000 {
            series.record(step, "r1", &stats(1, 0, 1.0));
        }
        let view = series.route("r1", 1000);
        assert_eq!(view["t"].as_array().unwrap().len(), POINTS);
        assert_eq!(view["t"][POINTS - 1], json!(1000 * STEP_SECS));
        series.record(1_000_000, "r1", &stats(1, 0, 1.0));
        let view = series.route("r1", 1_000_001);
        assert_eq!(view["t"].as_array().unwrap().len(), POINTS);
        assert_eq!(view["rps"][POINTS - 1], json!(0.1));
        assert_eq!(view["rps"][0], json!(0.0));
        series.forget("r1");
        assert_eq!(series.routes(), 0);
    }
}
