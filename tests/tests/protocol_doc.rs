//! Runs every `transcript` example of docs/PROTOCOL.md against a real
//! control plane and data plane, so the documentation cannot drift.

use portico_e2e::*;

struct Transcript {
    line: usize,
    steps: Vec<(bool, String)>,
}

fn transcripts(doc: &str) -> Vec<Transcript> {
    let mut out = Vec::new();
    let mut current: Option<Transcript> = None;
    for (n, line) in doc.lines().enumerate() {
        match (&mut current, line) {
            (None, "```transcript") => {
                current = Some(Transcript {
                    line: n + 1,
                    steps: Vec::new(),
                })
            }
            (Some(_), "```") => out.push(current.take().unwrap()),
            (Some(t), l) if l.starts_with("> ") => t.steps.push((true, l[2..].to_string())),
            (Some(t), l) if l.starts_with("< ") => t.steps.push((false, l[2..].to_string())),
            (Some(_), l) => panic!("line {}: unexpected transcript line {l:?}", n + 1),
            _ => {}
        }
    }
    out
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn documented_examples_hold() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .unwrap();
    let all = transcripts(&doc);
    assert!(all.len() >= 7, "found {} transcripts", all.len());
    let backend = FakeBackend::start("doc");
    let down = FakeBackend::start("down");
    down.stop();
    for t in all {
        let cp = ControlPlane::start();
        let _dp = DataPlane::start(&cp.grpc_url(), "doc-dp");
        let mut client = LineClient::connect(cp.registry);
        let mut session = String::new();
        for (send, text) in &t.steps {
            let text = text
                .replace("$BACKEND", &backend.url())
                .replace("$DOWN", &down.url());
            if *send {
                client.send_raw(format!("{}\n", text.replace("$S", &session)).as_bytes());
            } else {
                let got = client.read_line();
                let expected = text.replace("$S", &session);
                assert!(glob(&expected, &got), "docs/PROTOCOL.md transcript at line {}:\n expected {expected}\n      got {got}", t.line);
                if let Some(rest) = got.strip_prefix("ACK|") {
                    session = rest.rsplit('|').next().unwrap().to_string();
                }
            }
        }
    }
}

#[test]
fn glob_matching() {
    assert!(glob("ACK|a-*", "ACK|a-123"));
    assert!(glob("x*y*z", "x1y2z"));
    assert!(!glob("x*y*z", "x1z"));
    assert!(glob("abc", "abc"));
    assert!(!glob("a*a", "a"));
}
