//! Registry tokens (`--registry-auth FILE`): which services a token may
//! register and which domains and how many routes they may claim. Tokens are
//! kept and compared as SHA-256 digests, in constant time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

/// A token's SHA-256 digest, the only form in which it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TokenHash(out))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    tokens: Vec<EntryFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFormat {
    token: String,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    domains: Vec<String>,
    max_routes: Option<usize>,
}

/// What one token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Service names, `*` matching any run of characters.
    services: Vec<String>,
    /// Exact domains, or `*.suffix` for every name under the suffix.
    domains: Vec<String>,
    pub max_routes: Option<usize>,
}

/// `*` matches any run of characters (none included).
fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut text) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().expect("split yields one part at least");
    for part in middle {
        match text.find(part) {
            Some(at) => text = &text[at + part.len()..],
            None => return false,
        }
    }
    text.len() >= last.len() && text.ends_with(last)
}

impl Grant {
    pub fn covers_service(&self, service: &str) -> bool {
        self.services.iter().any(|p| glob(p, service))
    }

    /// A route domain (itself maybe `*.x`) is covered by an equal pattern or
    /// by a `*.suffix` pattern it falls under.
    pub fn covers_domain(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        self.domains.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => domain
                .strip_suffix(suffix)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => *p == domain,
        })
    }
}

/// The tokens of one auth file.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<(TokenHash, Arc<Grant>)>,
}

impl Tokens {
    pub fn parse(text: &str) -> Result<Tokens, AuthError> {
        let file: FileFormat = serde_json::from_str(text)
            .map_err(|e| AuthError::Invalid(format!("invalid auth file: {e}")))?;
        let mut entries = Vec::with_capacity(file.tokens.len());
        for (i, e) in file.tokens.into_iter().enumerate() {
            let invalid = |why: &str| AuthError::Invalid(format!("token #{}: {why}", i + 1));
            let hash = match e.token.strip_prefix("sha256:") {
                Some(hex) => TokenHash::from_hex(&hex.to_ascii_lowercase())
                    .ok_or_else(|| invalid("sha256: needs 64 hex digits"))?,
                None if e.token.len() < 16 => {
                    return Err(invalid("a token needs at least 16 characters"))
                }
                None => TokenHash::of(&e.token),
            };
            if e.services.is_empty() {
                return Err(invalid("no services"));
            }
            let grant = Grant {
                services: e.services,
                domains: e.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                max_routes: e.max_routes,
            };
            entries.push((hash, Arc::new(grant)));
        }
        Ok(Tokens { entries })
    }

    /// The grant of a token, looked at every entry in constant time each,
    /// so the time taken says nothing of which entry (or how much of it) matched.
    pub fn grant(&self, presented: &TokenHash) -> Option<Arc<Grant>> {
        let mut found = None;
        for (hash, grant) in &self.entries {
            if bool::from(hash.0.ct_eq(&presented.0)) {
                found = Some(grant.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The auth file as loaded now: reloaded on SIGHUP and when it changes; a
/// file that does not parse keeps the last good tokens.
pub struct RegistryAuth {
    path: PathBuf,
    tokens: ArcSwap<Tokens>,
    modified: Mutex<Option<SystemTime>>,
}

fn read(path: &Path) -> Result<Tokens, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Tokens::parse(&text)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl RegistryAuth {
    /// Loads the file; at start a bad file is an error.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let stamp = modified(path);
        let tokens = read(path)?;
        info!(path = %path.display(), tokens = tokens.len(), "registry auth on");
        Ok(RegistryAuth {
            path: path.to_path_buf(),
            tokens: ArcSwap::from_pointee(tokens),
            modified: Mutex::new(stamp),
        })
    }

    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens.load_full()
    }

    /// Reads the file again; on error the last good tokens stay.
    pub fn reload(&self, why: &str) {
        *self.modified.lock() = modified(&self.path);
        match read(&self.path) {
            Ok(tokens) => {
                info!(path = %self.path.display(), tokens = tokens.len(), why, "registry auth reloaded");
                self.tokens.store(Arc::new(tokens));
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, why, "registry auth not reloaded; keeping the last good tokens")
            }
        }
    }

    /// Reloads when the file's modification time moved.
    pub fn reload_if_changed(&self) {
        let now = modified(&self.path);
        if now != *self.modified.lock() {
            self.reload("the file changed");
        }
    }

    /// Reloads on SIGHUP and when the file changes (checked every second).
    pub async fn watch(self: Arc<Self>) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; the auth file is still watched");
                None
            }
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    self.reload("SIGHUP");
                }
                _ = tick.tick() => self.reload_if_changed(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"tokens":[
        {"token":"shop-secret-0123456789","services":["shop","shop-*"],
         "domains":["shop.example.com","*.shop.example.com"],"max_routes":2},
        {"token":"sha256:5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8",
         "services":["*"],"domains":["*.test"]}
    ]}"#;

    #[test]
    fn tokens_match_in_clear_or_by_digest() {
        let t = Tokens::parse(FILE).unwrap();
        let shop = t.grant(&TokenHash::of("shop-secret-0123456789")).unwrap();
        assert_eq!(shop.max_routes, Some(2));
        // sha256("password")
        let any = t.grant(&TokenHash::of("password")).unwrap();
        assert!(any.covers_service("anything"));
        assert!(t.grant(&TokenHash::of("shop-secret-012345678")).is_none());
        let h = TokenHash::of("x");
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
    }

    #[test]
    fn services_and_domains_follow_their_patterns() {
        let t = Tokens::parse(FILE).unwrap();
        let g = t.grant(&TokenHash::of("shop-secret-0123456789")).unwrap();
        for ok in ["shop", "shop-api", "shop-"] {
            assert!(g.covers_service(ok), "{ok}");
        }
        for no in ["shops", "bank", "my-shop"] {
            assert!(!g.covers_service(no), "{no}");
        }
        for ok in [
            "shop.example.com",
            "SHOP.example.com",
            "a.shop.example.com",
            "a.b.shop.example.com",
            "*.shop.example.com",
        ] {
            assert!(g.covers_domain(ok), "{ok}");
        }
        for no in [
            "bank.example.com",
            "*.example.com",
            "evilshop.example.com",
            ".shop.example.com",
            "example.com",
        ] {
            assert!(!g.covers_domain(no), "{no}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("a*c", "abc") && glob("a*c", "ac") && glob("*", ""));
        assert!(glob("*-api-*", "shop-api-1") && !glob("*-api-*", "shop-ap"));
        assert!(!glob("a*c", "ab") && !glob("a*a", "a"));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for (text, why) in [
            ("{", "invalid auth file"),
            (
                r#"{"tokens":[{"token":"short","services":["a"]}]}"#,
                "at least 16",
            ),
            (
                r#"{"tokens":[{"token":"sha256:abc","services":["a"]}]}"#,
                "64 hex",
            ),
            (
                r#"{"tokens":[{"token":"0123456789abcdefg"}]}"#,
                "no services",
            ),
            (r#"{"tokens":[],"extra":1}"#, "unknown field"),
        ] {
            let e = Tokens::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
