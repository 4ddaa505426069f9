//! The certificates the TLS listener serves: pushed pairs built into ready
//! TLS contexts, and the choice of one per handshake by SNI (exact name,
//! then wildcard, then the default), swapped whole on each push.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use openssl::error::ErrorStack;
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SniError, SslAcceptor, SslAlert, SslContext, SslMethod,
    SslRef,
};
use portico_proto::cert::{self, CertError};
use portico_proto::v1;

/// What the listener offers by ALPN, HTTP/2 first.
const ALPN: &[u8] = b"\x02h2\x08http/1.1";

/// A pushed certificate that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertPushError {
    #[error("certificate {name}: {source}")]
    Invalid { name: String, source: CertError },
    #[error("certificate {name}: building its TLS context: {source}")]
    Context { name: String, source: ErrorStack },
}

/// One certificate, ready for handshakes.
pub struct Served {
    pub wire: v1::Certificate,
    /// The names it covers, as this data plane read them from it.
    pub domains: Vec<String>,
    ctx: SslContext,
}

impl Served {
    /// Checks the pair and builds its context. An expired certificate is
    /// refused too: serving it would fail every client anyway.
    pub fn compile(wire: v1::Certificate, now: SystemTime) -> Result<Served, CertPushError> {
        let name = wire.name.clone();
        let checked = cert::check(wire.chain_pem.as_bytes(), wire.key_pem.as_bytes(), now)
            .map_err(|source| CertPushError::Invalid {
                name: name.clone(),
                source,
            })?;
        let ctx = context(&checked).map_err(|source| CertPushError::Context { name, source })?;
        Ok(Served {
            wire,
            domains: checked.domains,
            ctx,
        })
    }
}

fn select_alpn<'a>(_: &mut SslRef, client: &'a [u8]) -> Result<&'a [u8], AlpnError> {
    select_next_proto(ALPN, client).ok_or(AlpnError::NOACK)
}

/// TLS 1.2 and 1.3 with Mozilla's intermediate suites (ECDHE with AES-GCM
/// or ChaCha20), the pair, and ALPN.
fn context(checked: &cert::Checked) -> Result<SslContext, ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    builder.set_private_key(&checked.key)?;
    builder.set_certificate(&checked.chain[0])?;
    for intermediate in &checked.chain[1..] {
        builder.add_extra_chain_cert(intermediate.clone())?;
    }
    builder.set_alpn_select_callback(select_alpn);
    Ok(builder.build().into_context())
}

/// The certificates by name, and the indexes a handshake looks in.
#[derive(Default)]
pub struct CertStore {
    by_name: HashMap<String, Arc<Served>>,
    exact: HashMap<String, Arc<Served>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<Served>>,
    default: Option<Arc<Served>>,
}

/// Files are the operator's explicit choice, so they win over ACME; then
/// the certificate that lasts longer.
fn better(a: &Served, b: &Served) -> bool {
    let rank = |s: &Served| (s.wire.source == "file", s.wire.not_after_unix_ms);
    rank(a) > rank(b)
}

impl CertStore {
    /// Indexes `certs`; `default_host` names the host whose certificate
    /// answers handshakes without a known name.
    pub fn build(certs: &HashMap<String, Arc<Served>>, default_host: Option<&str>) -> CertStore {
        let mut store = CertStore {
            by_name: certs.clone(),
            ..Default::default()
        };
        let mut names: Vec<&Arc<Served>> = certs.values().collect();
        names.sort_by(|a, b| a.wire.name.cmp(&b.wire.name));
        for served in names {
            for domain in &served.domains {
                let (index, key) = match domain.strip_prefix("*.") {
                    Some(parent) => (&mut store.wildcard, parent),
                    None => (&mut store.exact, domain.as_str()),
                };
                match index.get(key) {
                    Some(held) if !better(served, held) => {}
                    _ => {
                        index.insert(key.to_string(), served.clone());
                    }
                }
            }
        }
        store.default = default_host.and_then(|h| store.for_host(h).cloned());
        store
    }

    /// The certificate covering `host`, exact name first.
    pub fn for_host(&self, host: &str) -> Option<&Arc<Served>> {
        self.exact.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    /// What a handshake for `sni` gets: the covering certificate, else the default.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<Served>> {
        sni.and_then(|h| self.for_host(h)).or(self.default.as_ref())
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Served>> {
        self.by_name.values()
    }
}

/// The TLS listener's settings: ALPN `h2` and `http/1.1`, and a server-name
/// callback that switches each handshake to its certificate's context, or
/// fails it with `unrecognized_name`.
pub fn tls_settings(
    certs: Arc<ArcSwap<CertStore>>,
) -> Result<pingora::listeners::tls::TlsSettings, ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    builder.set_alpn_select_callback(select_alpn);
    builder.set_servername_callback(move |ssl, alert| {
        let store = certs.load();
        let sni = ssl
            .servername(NameType::HOST_NAME)
            .map(str::to_ascii_lowercase);
        match store.select(sni.as_deref()) {
            Some(served) => ssl
                .set_ssl_context(&served.ctx)
                .map_err(|_| SniError::ALERT_FATAL),
            None => {
                *alert = SslAlert::UNRECOGNIZED_NAME;
                Err(SniError::ALERT_FATAL)
            }
        }
    });
    let mut settings = pingora::listeners::tls::TlsSettings::from(builder);
    settings.enable_h2();
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(name: &str, source: &str, domains: &[&str], not_after: i64) -> Arc<Served> {
        // The index only reads the wire fields; any context will do.
        let ctx = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .unwrap()
            .build()
            .into_context();
        Arc::new(Served {
            wire: v1::Certificate {
                name: name.into(),
                source: source.into(),
                not_after_unix_ms: not_after,
                ..Default::default()
            },
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ctx,
        })
    }

    fn pick(store: &CertStore, sni: Option<&str>) -> Option<String> {
        store.select(sni).map(|s| s.wire.name.clone())
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let certs: HashMap<String, Arc<Served>> = [
            served("file:a", "file", &["a.test"], 10),
            served("file:w", "file", &["*.w.test", "w.test"], 10),
            served("acme:a.test", "acme", &["a.test"], 99),
            served("acme:b.test", "acme", &["b.test"], 5),
        ]
        .into_iter()
        .map(|s| (s.wire.name.clone(), s))
        .collect();
        let store = CertStore::build(&certs, None);
        assert_eq!(pick(&store, Some("a.test")).unwrap(), "file:a");
        assert_eq!(pick(&store, Some("x.w.test")).unwrap(), "file:w");
        assert_eq!(pick(&store, Some("w.test")).unwrap(), "file:w");
        assert_eq!(pick(&store, Some("y.x.w.test")), None);
        assert_eq!(pick(&store, Some("b.test")).unwrap(), "acme:b.test");
        assert_eq!(pick(&store, Some("unknown.test")), None);
        assert_eq!(pick(&store, None), None);
        let store = CertStore::build(&certs, Some("b.test"));
        assert_eq!(pick(&store, Some("unknown.test")).unwrap(), "acme:b.test");
        assert_eq!(pick(&store, None).unwrap(), "acme:b.test");
    }
}
