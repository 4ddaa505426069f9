//! A session's key and handle. The id a client holds is a bearer
//! credential, so the control plane keeps, shows and logs only what is
//! derived from it one way: the key (SHA-256) and the handle.

use sha2::{Digest, Sha256};

/// The key a session is found and stored by: the SHA-256 of its id, in
/// lower-case hex. Every command hashes the id it carries: one look-up by
/// key, the same work for a known id and an unknown one.
pub fn session_key(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut key = String::with_capacity(64);
    for byte in digest {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    key
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A key as `session_key` makes it (a stored id of an older format is not:
/// ids always hold a `-`).
pub fn is_key(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How the keys of sites (`--sites`) begin: no session key does (they are
/// hex), so no `RECONNECT` reaches a site.
pub const SITE_PREFIX: &str = "site:";

/// Whether `key` is a site's, not a session's.
pub fn is_site(key: &str) -> bool {
    key.starts_with(SITE_PREFIX)
}

/// What views, logs and events name a session by: its instance and the
/// first 8 hex digits of its key (`api-1#3f9c2a1b`). It grants nothing. A
/// site is named by its key (`site:shop`), which is no secret.
pub fn handle(instance: &str, key: &str) -> String {
    if is_site(key) {
        return key.to_string();
    }
    format!("{instance}#{}", key.get(..8).unwrap_or(key))
}

/// The handle's fingerprint alone (`#3f9c2a1b`), where the instance is not at hand.
pub fn fingerprint(key: &str) -> String {
    format!("#{}", key.get(..8).unwrap_or(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_ids_sha256_and_the_handle_shows_its_start() {
        // sha256("abc")
        let key = session_key("abc");
        assert_eq!(
            key,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_key(&key));
        assert!(!is_key("web-1-0123456789abcdef0123456789abcdef"));
        assert_eq!(handle("web-1", &key), "web-1#ba7816bf");
    }
}
