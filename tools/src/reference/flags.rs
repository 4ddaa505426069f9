//! `flags.md`: every flag of the three binaries, grouped by the topics
//! their `--help` shows, from the clap definitions.

use clap::{ArgAction, Command, CommandFactory};

use super::markdown::{code, header, table};

/// The binaries and their commands, as clap builds them.
pub fn commands() -> Vec<Command> {
    vec![
        portico_cp::cli::cp::Args::command(),
        portico_data_plane::cli::Args::command(),
        portico_cp::cli::ctl::Args::command(),
    ]
}

/// The flags a command documents: every argument but help and version.
pub fn documented(cmd: &Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .filter(|a| a.get_long().is_some())
}

pub fn page() -> String {
    let mut out = header(
        "Flags",
        "Every flag of `portico-cp`, `portico-dp` and `porticoctl`, by topic as `--help` groups them. \
         Each can also be set with the environment variable beside it; a flag given on the command line wins.",
    );
    for mut cmd in commands() {
        cmd.build();
        out.push_str(&binary(&cmd));
    }
    out
}

fn binary(cmd: &Command) -> String {
    let name = cmd.get_name();
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let mut out = format!("\n## `{name}`\n\n{about}.\n");
    let mut topics: Vec<&str> = Vec::new();
    for arg in documented(cmd) {
        let topic = arg.get_help_heading().unwrap_or("Other");
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    for topic in topics {
        let rows: Vec<Vec<String>> = documented(cmd)
            .filter(|a| a.get_help_heading().unwrap_or("Other") == topic)
            .map(row)
            .collect();
        out.push_str(&format!("\n### {topic}\n"));
        out.push_str(&table(
            &["flag", "environment", "default", "meaning"],
            &rows,
        ));
    }
    let subcommands: Vec<Vec<String>> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .map(|s| {
            vec![
                format!("`{name} {}`", s.get_name()),
                s.get_about().map(|a| a.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    if !subcommands.is_empty() {
        out.push_str("\n### Subcommands\n");
        out.push_str(&table(&["command", "what it does"], &subcommands));
    }
    out
}

fn row(arg: &clap::Arg) -> Vec<String> {
    let long = arg.get_long().unwrap_or_default();
    let takes_value = !matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    );
    let flag = format!("`--{long}`");
    let env = arg
        .get_env()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let default = if takes_value {
        let values: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        values.join(",")
    } else {
        String::new()
    };
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    vec![flag, code(&env), code(&default), help]
}
