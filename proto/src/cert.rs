//! Certificates served at the edge: the one check both planes make that a
//! PEM chain and key are a servable pair, and which names a certificate covers.

use std::time::{Duration, SystemTime};

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::v1;

/// Why a certificate cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in the chain")]
    NoCertificate,
    #[error("the chain does not parse: {0}")]
    Chain(String),
    #[error("the private key does not parse: {0}")]
    Key(String),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("the certificate expired at {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
    #[error("the certificate names no DNS host")]
    NoNames,
}

/// A pair that passed [`check`]: what it covers, and the parsed parts a TLS
/// context is built from.
pub struct Checked {
    pub domains: Vec<String>,
    pub not_after_unix_ms: i64,
    pub serial: String,
    /// The leaf first, then its chain.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

fn unix_ms(time: &openssl::asn1::Asn1TimeRef) -> Result<i64, CertError> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| CertError::Chain(e.to_string()))?;
    let diff = epoch
        .diff(time)
        .map_err(|e| CertError::Chain(e.to_string()))?;
    Ok((i64::from(diff.days) * 86_400 + i64::from(diff.secs)) * 1000)
}

/// Checks that `chain_pem` holds a certificate (then its chain) that is
/// valid at `now` and names DNS hosts, and that `key_pem` is its key.
pub fn check(chain_pem: &[u8], key_pem: &[u8], now: SystemTime) -> Result<Checked, CertError> {
    let chain = X509::stack_from_pem(chain_pem).map_err(|e| CertError::Chain(e.to_string()))?;
    let leaf = chain.first().ok_or(CertError::NoCertificate)?;
    let key = PKey::private_key_from_pem(key_pem).map_err(|e| CertError::Key(e.to_string()))?;
    let public = leaf
        .public_key()
        .map_err(|e| CertError::Chain(e.to_string()))?;
    if !public.public_eq(&key) {
        return Err(CertError::KeyMismatch);
    }
    let now_ms = crate::time::unix_ms(now);
    let not_after_unix_ms = unix_ms(leaf.not_after())?;
    if not_after_unix_ms <= now_ms {
        return Err(CertError::Expired(leaf.not_after().to_string()));
    }
    if unix_ms(leaf.not_before())? > now_ms {
        return Err(CertError::NotYetValid(leaf.not_before().to_string()));
    }
    let mut domains: Vec<String> = leaf
        .subject_alt_names()
        .into_iter()
        .flatten()
        .filter_map(|name| name.dnsname().map(str::to_ascii_lowercase))
        .collect();
    if domains.is_empty() {
        domains.extend(
            leaf.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .filter_map(|e| e.data().to_string().ok())
                .map(|cn| cn.to_ascii_lowercase())
                .filter(|cn| cn.contains('.') && !cn.contains(' ')),
        );
    }
    if domains.is_empty() {
        return Err(CertError::NoNames);
    }
    domains.sort();
    domains.dedup();
    let serial = leaf
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_ascii_lowercase()))
        .map_err(|e| CertError::Chain(e.to_string()))?;
    Ok(Checked {
        domains,
        not_after_unix_ms,
        serial,
        chain,
        key,
    })
}

/// The wire form of a checked pair.
pub fn to_wire(
    name: &str,
    source: &str,
    chain_pem: &str,
    key_pem: &str,
    checked: &Checked,
) -> v1::Certificate {
    v1::Certificate {
        name: name.to_string(),
        domains: checked.domains.clone(),
        chain_pem: chain_pem.to_string(),
        key_pem: key_pem.to_string(),
        source: source.to_string(),
        not_after_unix_ms: checked.not_after_unix_ms,
        serial: checked.serial.clone(),
    }
}

/// Whether a certificate name (`a.example.com` or `*.example.com`) covers
/// `host`: a wildcard covers exactly one label.
pub fn covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

/// Whether the certificate must be renewed at `now`: `before` its end.
pub fn due(not_after_unix_ms: i64, before: Duration, now: SystemTime) -> bool {
    let now = crate::time::unix_ms(now);
    not_after_unix_ms.saturating_sub(before.as_millis() as i64) <= now
}

/// A self-signed ECDSA P-256 pair (certificate PEM, key PEM) for `names`,
/// valid from `from_days` to `to_days` days from now: for tests.
#[cfg(any(test, feature = "testing"))]
pub fn self_signed(names: &[&str], from_days: i64, to_days: i64) -> (String, String) {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::X509NameBuilder;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("a key")).expect("a key");
    let mut name = X509NameBuilder::new().expect("a name");
    name.append_entry_by_text("CN", names[0]).expect("a CN");
    let name = name.build();
    let mut b = X509::builder().expect("a builder");
    b.set_version(2).expect("v3");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("key");
    let now = crate::time::unix_ms(SystemTime::now()) / 1000;
    let day = 86_400;
    let at = |d: i64| Asn1Time::from_unix(now + d * day).expect("a time");
    b.set_not_before(&at(from_days)).expect("not before");
    b.set_not_after(&at(to_days)).expect("not after");
    let mut san = SubjectAlternativeName::new();
    for n in names {
        san.dns(n);
    }
    let san = san.build(&b.x509v3_context(None, None)).expect("SAN");
    b.append_extension(san).expect("SAN");
    b.sign(&key, MessageDigest::sha256()).expect("signed");
    let pem = |bytes: Vec<u8>| String::from_utf8(bytes).expect("PEM is ASCII");
    (
        pem(b.build().to_pem().expect("PEM")),
        pem(key.private_key_to_pem_pkcs8().expect("PEM")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::X509NameBuilder;

    fn key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn cert(key: &PKey<Private>, names: &[&str], from_days: i64, to_days: i64) -> String {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", names[0]).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        let day = 86_400;
        let now = crate::time::unix_ms(SystemTime::now()) / 1000;
        b.set_not_before(&Asn1Time::from_unix(now + from_days * day).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(now + to_days * day).unwrap())
            .unwrap();
        let mut san = SubjectAlternativeName::new();
        for n in names {
            san.dns(n);
        }
        let san = san.build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(san).unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        String::from_utf8(b.build().to_pem().unwrap()).unwrap()
    }

    fn pem(key: &PKey<Private>) -> Vec<u8> {
        key.private_key_to_pem_pkcs8().unwrap()
    }

    #[test]
    fn a_good_pair_gives_its_names_end_and_serial() {
        let k = key();
        let chain = cert(&k, &["A.test", "*.w.test"], -1, 30);
        let checked = check(chain.as_bytes(), &pem(&k), SystemTime::now()).unwrap();
        assert_eq!(checked.domains, ["*.w.test", "a.test"]);
        assert_eq!(checked.chain.len(), 1);
        let days =
            (checked.not_after_unix_ms - crate::time::unix_ms(SystemTime::now())) / 86_400_000;
        assert_eq!(days, 29);
    }

    #[test]
    fn bad_pairs_say_what_is_wrong() {
        let (k, other) = (key(), key());
        let good = cert(&k, &["a.test"], -1, 30);
        let now = SystemTime::now();
        let err = |chain: &str, key: &[u8]| check(chain.as_bytes(), key, now).err().unwrap();
        assert_eq!(err(&good, &pem(&other)), CertError::KeyMismatch);
        assert!(matches!(
            err(&cert(&k, &["a.test"], -10, -1), &pem(&k)),
            CertError::Expired(_)
        ));
        assert!(matches!(
            err(&cert(&k, &["a.test"], 2, 30), &pem(&k)),
            CertError::NotYetValid(_)
        ));
        assert!(matches!(
            err(&good[..good.len() / 2], &pem(&k)),
            CertError::Chain(_) | CertError::NoCertificate
        ));
        let key_pem = pem(&k);
        assert!(matches!(
            err(&good, &key_pem[..key_pem.len() / 2]),
            CertError::Key(_)
        ));
        assert_eq!(err("", &pem(&k)), CertError::NoCertificate);
    }

    #[test]
    fn a_wildcard_covers_one_label() {
        assert!(covers("*.w.test", "x.w.test"));
        assert!(!covers("*.w.test", "w.test"));
        assert!(!covers("*.w.test", "y.x.w.test"));
        assert!(!covers("*.w.test", ".w.test"));
        assert!(covers("a.test", "a.test"));
        assert!(!covers("a.test", "b.a.test"));
    }

    #[test]
    fn renewal_is_due_before_the_end() {
        let now = SystemTime::now();
        let end = crate::time::unix_ms(now) + 40 * 86_400_000;
        let month = Duration::from_secs(30 * 86_400);
        assert!(!due(end, month, now));
        assert!(due(end, month, now + Duration::from_secs(11 * 86_400)));
    }
}
