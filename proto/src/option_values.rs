//! The values of route options beyond durations, flags and counts: names
//! (headers, query parameters, countries), a path, and the words some
//! options allow. Checked here once for both planes.

use std::fmt;

/// Keeps echoed input short in error messages.
pub(crate) fn clip(raw: &str) -> String {
    raw.chars().take(80).collect()
}

/// Header or parameter names (`pii_strip_headers`, `pii_mask_query`),
/// matched without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Names(pub std::sync::Arc<[String]>);

impl Names {
    pub fn parse(raw: &str) -> Result<Names, String> {
        let mut names: Vec<String> = Vec::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let token = name.len() <= 256
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~[]".contains(&b));
            if !token {
                return Err(format!("\"{}\" is not a name", clip(name)));
            }
            names.push(name.to_ascii_lowercase());
        }
        names.sort();
        names.dedup();
        Ok(Names(names.into()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// The `DataPlaneHello.features` entry of a data plane with a GeoIP database.
pub const FEATURE_GEOIP: &str = "geoip";

/// What `geo_unknown` may be: what an address the GeoIP database does not
/// know gets.
pub const GEO_UNKNOWN: [&str; 2] = ["allow", "deny"];

/// `add_prefix`: a path (`/v1`), kept as given without a trailing `/`.
pub(crate) fn path_prefix(raw: &str) -> Result<std::sync::Arc<str>, String> {
    crate::model::validate_path(raw).map_err(|e| e.to_string())?;
    if raw.contains(['?', '#']) {
        return Err("a path without ? or #".into());
    }
    Ok(raw.trim_end_matches('/').into())
}

/// ISO 3166-1 alpha-2 country codes, kept lower-case like other names.
pub(crate) fn countries(raw: &str) -> Result<Names, String> {
    let names = Names::parse(raw)?;
    match names
        .0
        .iter()
        .find(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        Some(bad) => Err(format!("\"{bad}\" is not a two-letter country code")),
        None => Ok(names),
    }
}

/// What `pii_ip` may be.
pub const PII_IP: [&str; 4] = ["none", "last_octet", "hash", "full"];
