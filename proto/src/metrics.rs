//! Prometheus metrics for both planes: families built at scrape time from
//! the planes' own atomics (the `prometheus` crate's model and text
//! encoder), the process's own metrics, and a lock-free histogram.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::Collector;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

/// Upper bounds, in seconds, of the duration histograms.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Counts per bucket (the last one past every bound), the sum in
/// microseconds and the count, each an atomic: observing takes no lock.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, seconds: f64) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn to_proto(&self) -> Histogram {
        let mut h = Histogram::default();
        let mut cumulative = 0;
        let buckets = DURATION_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        let past = self.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        // The count is read last: it is never below the buckets' sum.
        h.set_sample_count(self.count().max(cumulative + past));
        h.set_sample_sum(self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        h
    }
}

/// The type of a family.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family, filled with a sample per label set.
pub struct Family(MetricFamily);

fn labelled(labels: &[(&str, &str)]) -> Metric {
    Metric::from_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut pair = LabelPair::default();
                pair.set_name(k.to_string());
                pair.set_value(v.to_string());
                pair
            })
            .collect(),
    )
}

impl Family {
    pub fn new(name: &str, help: &str, kind: Kind) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(match kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
        });
        Family(f)
    }

    /// A counter or gauge sample, by the family's type.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = labelled(labels);
        match self.0.get_field_type() {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.0.mut_metric().push(m);
    }

    pub fn add_histogram(&mut self, labels: &[(&str, &str)], h: &AtomicHistogram) {
        let mut m = labelled(labels);
        m.set_histogram(h.to_proto());
        self.0.mut_metric().push(m);
    }
}

/// The text exposition of `families` (those without samples left out) and
/// of the process's own metrics (CPU, resident memory, open files), written
/// into `out` (given with the capacity the last page needed, a large page
/// is not copied over and over as it grows).
pub fn render_into(families: Vec<Family>, out: &mut String) {
    let mut all: Vec<MetricFamily> = families
        .into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    all.extend(prometheus::process_collector::ProcessCollector::for_self().collect());
    if let Err(e) = TextEncoder::new().encode_utf8(&all, out) {
        *out = format!("# metrics could not be encoded: {e}\n");
    }
}

/// [`render_into`] a new string.
pub fn render(families: Vec<Family>) -> String {
    let mut out = String::new();
    render_into(families, &mut out);
    out
}

/// The content type of [`render`]'s output.
pub fn content_type() -> String {
    TextEncoder::new().format_type().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_as_text_with_cumulative_buckets() {
        let h = AtomicHistogram::default();
        for s in [0.0002, 0.003, 0.003, 20.0] {
            h.observe(s);
        }
        let mut requests = Family::new("portico_requests_total", "Requests.", Kind::Counter);
        requests.add(&[("route_id", "r1"), ("code", "2xx")], 3.0);
        let mut duration = Family::new(
            "portico_request_duration_seconds",
            "Durations.",
            Kind::Histogram,
        );
        duration.add_histogram(&[("route_id", "r1")], &h);
        let empty = Family::new("portico_unused", "Nothing.", Kind::Gauge);
        let text = render(vec![requests, duration, empty]);
        assert!(
            text.contains("# TYPE portico_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("portico_requests_total{route_id=\"r1\",code=\"2xx\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "portico_request_duration_seconds_bucket{route_id=\"r1\",le=\"0.0005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portico_request_duration_seconds_bucket{route_id=\"r1\",le=\"0.005\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("portico_request_duration_seconds_bucket{route_id=\"r1\",le=\"+Inf\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("portico_request_duration_seconds_count{route_id=\"r1\"} 4"),
            "{text}"
        );
        assert!(
            !text.contains("portico_unused"),
            "empty families are left out"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
