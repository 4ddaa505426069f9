//! Prometheus metrics for both planes: families built at scrape time from
//! the planes' own atomics (the `prometheus` crate's model and text
//! encoder), the process's own metrics, and a lock-free histogram.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::Collector;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric as Sample, MetricFamily, MetricType,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family as declared once: what a scrape renders and what
/// `docs/reference/metrics.md` lists.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The label names every sample carries, in order.
    pub labels: &'static [&'static str],
}

/// One metric family, filled with a sample per label set.
pub struct Family {
    family: MetricFamily,
    labels: &'static [&'static str],
}

fn labelled(labels: &[(&str, &str)]) -> Sample {
    Sample::from_label(
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
    pub fn new(metric: &'static Metric) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(metric.name.to_string());
        f.set_help(metric.help.to_string());
        f.set_field_type(match metric.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
        });
        Family {
            family: f,
            labels: metric.labels,
        }
    }

    fn sample(&self, labels: &[(&str, &str)]) -> Sample {
        debug_assert!(
            labels
                .iter()
                .map(|(k, _)| *k)
                .eq(self.labels.iter().copied()),
            "{}: labels {labels:?} are not the declared {:?}",
            self.family.name(),
            self.labels
        );
        labelled(labels)
    }

    /// A counter or gauge sample, by the family's type.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = self.sample(labels);
        match self.family.get_field_type() {
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
        self.family.mut_metric().push(m);
    }

    pub fn add_histogram(&mut self, labels: &[(&str, &str)], h: &AtomicHistogram) {
        let mut m = self.sample(labels);
        m.set_histogram(h.to_proto());
        self.family.mut_metric().push(m);
    }
}

/// The text exposition of `families` (those without samples left out) and
/// of the process's own metrics (CPU, resident memory, open files), written
/// into `out` (given with the capacity the last page needed, a large page
/// is not copied over and over as it grows).
pub fn render_into(families: Vec<Family>, out: &mut String) {
    let mut all: Vec<MetricFamily> = families
        .into_iter()
        .map(|f| f.family)
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    all.extend(prometheus::process_collector::ProcessCollector::for_self().collect());
    if let Err(e) = TextEncoder::new().encode_utf8(&all, out) {
        *out = format!("# metrics could not be encoded: {e}\n");
    }
}

/// The process's own metrics (name, type, help) as this platform's
/// collector reports them.
pub fn process_metrics() -> Vec<(String, &'static str, String)> {
    prometheus::process_collector::ProcessCollector::for_self()
        .collect()
        .into_iter()
        .map(|f| {
            let kind = match f.get_field_type() {
                MetricType::COUNTER => Kind::Counter,
                MetricType::HISTOGRAM => Kind::Histogram,
                _ => Kind::Gauge,
            };
            (f.name().to_string(), kind.as_str(), f.help().to_string())
        })
        .collect()
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
        static REQUESTS: Metric = Metric {
            name: "portico_requests_total",
            help: "Requests.",
            kind: Kind::Counter,
            labels: &["route_id", "code"],
        };
        static DURATION: Metric = Metric {
            name: "portico_request_duration_seconds",
            help: "Durations.",
            kind: Kind::Histogram,
            labels: &["route_id"],
        };
        static UNUSED: Metric = Metric {
            name: "portico_unused",
            help: "Nothing.",
            kind: Kind::Gauge,
            labels: &[],
        };
        let mut requests = Family::new(&REQUESTS);
        requests.add(&[("route_id", "r1"), ("code", "2xx")], 3.0);
        let mut duration = Family::new(&DURATION);
        duration.add_histogram(&[("route_id", "r1")], &h);
        let empty = Family::new(&UNUSED);
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
