//! `options.md`: every per-route option (`OPTIONS_SET` keys) from the one
//! settings model, with the error a bad value gets from the same parser.

use portico_proto::settings::OptionKey;

use super::markdown::{code, header, table};

pub fn page() -> String {
    let mut out = header(
        "Route options",
        "The keys of `OPTIONS_SET|S|target|key|value` (`target` is `ALL`, the session's default, \
         or a route id; a route's own value wins). Keys are matched in any case. \
         The site-file column gives the spelling in a go-proxy site file (`SITES.md`).",
    );
    let rows: Vec<Vec<String>> = OptionKey::ALL
        .iter()
        .map(|key| {
            let doc = key.doc();
            let refused = match key.parse_value(doc.bad_example) {
                Err(e) => format!("`{}` → `ERROR|{e}`", doc.bad_example),
                Ok(v) => panic!("{} accepts its bad example as {v}", key.as_str()),
            };
            vec![
                code(key.as_str()),
                doc.value,
                doc.default,
                doc.meaning.to_string(),
                doc.site_key.unwrap_or("–").to_string(),
                refused,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "key",
            "value",
            "default",
            "meaning",
            "site file",
            "a bad value",
        ],
        &rows,
    ));
    let unknown = OptionKey::from_name("speed").expect_err("speed is no option");
    out.push_str(&format!(
        "\nAn unknown key gets `ERROR|{unknown}` (for `speed`). \
         `OPTIONS_REMOVE|S|target|key` takes a value back. \
         Headers, health checks, rate limits and circuit breakers have their own commands: `docs/PROTOCOL.md`.\n"
    ));
    out
}
