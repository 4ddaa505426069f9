//! A throwaway certificate authority for TLS backends in tests.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

/// An acceptor with a fresh self-signed certificate for `localhost` and
/// 127.0.0.1, and that certificate as PEM (to trust it as a CA).
pub fn self_signed_acceptor() -> (SslAcceptor, String) {
    let key = key();
    let cert = cert("localhost", &key, None, true);
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_private_key(&key).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    let pem = String::from_utf8(cert.to_pem().unwrap()).unwrap();
    (acceptor.build(), pem)
}

/// A certificate authority with a server and a client certificate, written
/// as PEM files, for TLS between the planes.
pub struct Pki {
    pub ca: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

fn key() -> PKey<openssl::pkey::Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn cert(
    cn: &str,
    key: &PKey<openssl::pkey::Private>,
    issuer: Option<(&X509, &PKey<openssl::pkey::Private>)>,
    server: bool,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    if issuer.is_none() {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    } else {
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        let mut usage = openssl::x509::extension::ExtendedKeyUsage::new();
        if server {
            usage.server_auth();
        } else {
            usage.client_auth();
        }
        b.append_extension(usage.build().unwrap()).unwrap();
        if server {
            let san = SubjectAlternativeName::new()
                .dns("localhost")
                .ip("127.0.0.1")
                .build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None))
                .unwrap();
            b.append_extension(san).unwrap();
        }
    }
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

/// `--tls-cert CERT --tls-key KEY --tls-ca CA`, as every binary takes them.
pub fn tls_args(
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> Vec<String> {
    [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
}

impl Pki {
    /// The control plane's TLS arguments.
    pub fn server_args(&self) -> Vec<String> {
        tls_args(&self.server_cert, &self.server_key, &self.ca)
    }

    /// A data plane's or porticoctl's TLS arguments, trusting `ca`.
    pub fn client_args(&self, ca: &std::path::Path) -> Vec<String> {
        tls_args(&self.client_cert, &self.client_key, ca)
    }

    /// Generates a CA, a server certificate for localhost and a client
    /// certificate in `dir`. With `rogue`, the client certificate is signed
    /// by another authority.
    pub fn generate(dir: &std::path::Path, rogue_client: bool) -> Pki {
        let (ca_key, other_key) = (key(), key());
        let ca = cert("portico test ca", &ca_key, None, false);
        let other = cert("someone else", &other_key, None, false);
        let (server_key, client_key) = (key(), key());
        let server = cert("localhost", &server_key, Some((&ca, &ca_key)), true);
        let client_issuer = if rogue_client {
            (&other, &other_key)
        } else {
            (&ca, &ca_key)
        };
        let client = cert("data plane", &client_key, Some(client_issuer), false);
        let write = |name: &str, pem: Vec<u8>| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca.to_pem().unwrap()),
            server_cert: write("server.pem", server.to_pem().unwrap()),
            server_key: write("server.key", server_key.private_key_to_pem_pkcs8().unwrap()),
            client_cert: write("client.pem", client.to_pem().unwrap()),
            client_key: write("client.key", client_key.private_key_to_pem_pkcs8().unwrap()),
        }
    }
}
