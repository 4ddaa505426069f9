//! `metrics.md`: every family both planes export, from their catalogues,
//! and the process metrics the collector adds.

use portico_proto::metrics::{process_metrics, Metric};

use super::markdown::{code, header, table};

/// Each plane's title, admin address and catalogue.
pub fn planes() -> [(&'static str, &'static str, &'static [&'static Metric]); 2] {
    [
        (
            "Control plane (`portico-cp`)",
            "127.0.0.1:8183",
            &portico_cp::observe::metrics::METRICS,
        ),
        (
            "Data plane (`portico-dp`)",
            "127.0.0.1:8184",
            &portico_data_plane::observe::metrics::METRICS,
        ),
    ]
}

pub fn page() -> String {
    let mut out = header(
        "Metrics",
        "Prometheus text format at `GET /metrics` on each plane's admin listener. \
         A family appears once it has a sample (a counter that never moved is left out).",
    );
    for (title, admin, catalogue) in planes() {
        let rows: Vec<Vec<String>> = catalogue
            .iter()
            .map(|m| {
                vec![
                    code(m.name),
                    m.kind.as_str().to_string(),
                    m.labels
                        .iter()
                        .map(|l| code(l))
                        .collect::<Vec<_>>()
                        .join(", "),
                    m.help.to_string(),
                ]
            })
            .collect();
        out.push_str(&format!("\n## {title}\n\n`curl {admin}/metrics`\n"));
        out.push_str(&table(&["name", "type", "labels", "meaning"], &rows));
    }
    let rows: Vec<Vec<String>> = process_metrics()
        .into_iter()
        .map(|(name, kind, help)| vec![code(&name), kind.to_string(), help])
        .collect();
    out.push_str("\n## Both planes: the process\n");
    out.push_str(&table(&["name", "type", "meaning"], &rows));
    out
}
