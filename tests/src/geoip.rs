//! GeoIP databases for tests: MaxMind DB files written with PyPI's
//! `mmdb-writer` (installed by `scripts/setup.sh --tests` into
//! `target/tests-venv`), mapping loopback addresses to countries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's python: `target/tests-venv/bin/python`, beside the binaries'
/// profile folder.
fn python() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let python = target.join("tests-venv").join("bin").join("python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh --tests",
        python.display()
    );
    python
}

/// Writes a Country database at `path` (whole, then renamed into place):
/// each network or address to its ISO code.
pub fn write_db(path: &Path, entries: &[(&str, &str)]) {
    let script = r#"
import sys
from mmdb_writer import MMDBWriter
from netaddr import IPSet
w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
args = sys.argv[2:]
for net, code in zip(args[::2], args[1::2]):
    w.insert_network(IPSet([net]), {"country": {"iso_code": code}})
w.to_db_file(sys.argv[1])
"#;
    let aside = path.with_extension("tmp");
    let mut args = vec![aside.display().to_string()];
    for (net, code) in entries {
        args.push(net.to_string());
        args.push(code.to_string());
    }
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(&args)
        .output()
        .expect("running the mmdb writer");
    assert!(
        out.status.success(),
        "mmdb writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&aside, path).unwrap();
}
