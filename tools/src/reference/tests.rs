//! The reference is current, and holds every flag `--help` shows, every
//! option the settings model accepts, every metric and every event.

use portico_cp::observe::dashboard::OPERATOR_EVENTS;
use portico_cp::protocol::command::EventType;
use portico_proto::settings::OptionKey;

use super::*;

fn page(name: &str) -> String {
    pages()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| text)
        .unwrap()
}

#[test]
fn the_checked_in_reference_is_what_the_code_makes() {
    let stale = write_or_check(&folder(), true).unwrap();
    assert!(
        stale.is_empty(),
        "docs/reference/ is out of date ({}): run `cargo run -p portico-tools -- docs`",
        stale.join(", ")
    );
}

#[test]
fn every_flag_in_help_is_in_the_flags_page() {
    let text = page("flags.md");
    for mut cmd in flags::commands() {
        let help = cmd.render_long_help().to_string();
        // A flag's own line starts with it (after `-h, ` for short ones).
        let shown: Vec<&str> = help
            .lines()
            .map(|l| l.trim_start())
            .map(|l| {
                l.split_once(", ")
                    .filter(|(s, _)| s.len() == 2)
                    .map_or(l, |(_, rest)| rest)
            })
            .filter_map(|l| l.strip_prefix("--"))
            .filter_map(|l| l.split([' ', '=']).next())
            .filter(|w| !["help", "version"].contains(w))
            .collect();
        assert!(shown.len() > 3, "{help}");
        for flag in shown {
            assert!(
                text.contains(&format!("| `--{flag}` |")),
                "{}: --{flag} is in --help but not in flags.md",
                cmd.get_name()
            );
        }
        cmd.build();
        let documented = flags::documented(&cmd).count();
        let rows = text
            .split(&format!("## `{}`", cmd.get_name()))
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .map(|s| s.lines().filter(|l| l.starts_with("| `--")).count())
            .unwrap();
        assert_eq!(rows, documented, "{}: a row per flag", cmd.get_name());
    }
}

#[test]
fn every_flag_has_a_topic_and_a_meaning() {
    for mut cmd in flags::commands() {
        cmd.build();
        for arg in flags::documented(&cmd) {
            assert!(
                arg.get_help_heading().is_some() && arg.get_help().is_some(),
                "{} --{}: a help heading and a line of meaning",
                cmd.get_name(),
                arg.get_long().unwrap()
            );
        }
    }
}

#[test]
fn every_option_the_model_accepts_is_in_the_options_page() {
    let text = page("options.md");
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|k| *k != "key")
        .collect();
    let accepted: Vec<&str> = OptionKey::ALL
        .iter()
        .map(|k| k.as_str())
        .filter(|k| OptionKey::from_name(k).is_ok())
        .collect();
    assert_eq!(keys, accepted);
}

#[test]
fn every_metric_is_in_the_metrics_page() {
    let text = page("metrics.md");
    for (_, _, catalogue) in metrics::planes() {
        for m in catalogue {
            assert!(
                text.contains(&format!("| `{}` | {} |", m.name, m.kind.as_str())),
                "{}",
                m.name
            );
        }
    }
    assert!(text.contains("`process_resident_memory_bytes`"), "{text}");
}

#[test]
fn every_event_is_in_the_events_page() {
    let text = page("events.md");
    for e in EventType::EVERY {
        assert!(text.contains(&format!("| `{}` |", e.as_str())), "{e:?}");
    }
    for (kind, _) in OPERATOR_EVENTS {
        assert!(
            text.contains(&format!(
                "| `{kind}` | {}",
                OPERATOR_EVENTS.iter().find(|(k, _)| *k == kind).unwrap().1
            )),
            "{kind}"
        );
    }
}

#[test]
fn no_readme_paragraph_is_over_twelve_lines() {
    let readme = std::fs::read_to_string(folder().join("../../README.md")).unwrap();
    let mut in_code = false;
    let mut run = Vec::new();
    for line in readme.lines().chain([""]) {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let prose = !in_code && !line.trim().is_empty() && !line.starts_with(['|', '#', '!']);
        if prose {
            run.push(line);
        } else {
            assert!(
                run.len() <= 12,
                "a README paragraph of {} lines:\n{}",
                run.len(),
                run.join("\n")
            );
            run.clear();
        }
    }
}
