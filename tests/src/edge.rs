//! HTTPS at the edge under test: a certificate authority that issues ECDSA
//! P-256 pairs into a `--cert-dir`, `curl` as a user runs it, and a small
//! TLS client that reports which certificate a handshake got.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

/// A throwaway CA; its certificate is at `pem`.
pub struct TestCa {
    key: PKey<Private>,
    cert: X509,
    pub pem: PathBuf,
}

/// One issued pair, as PEM, with its serial (lower-case hex).
pub struct Pair {
    pub chain: String,
    pub key: String,
    pub serial: String,
}

fn p256() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn days(d: i64) -> Asn1Time {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Asn1Time::from_unix(now + d * 86_400).unwrap()
}

impl TestCa {
    /// A new CA whose certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        let key = p256();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "portico edge test ca")
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&days(-1)).unwrap();
        b.set_not_after(&days(365)).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.to_pem().unwrap()).unwrap();
        TestCa { key, cert, pem }
    }

    /// A pair for `names`, valid from `from` to `to` days from now.
    pub fn issue(&self, names: &[&str], from: i64, to: i64) -> Pair {
        let key = p256();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", names[0]).unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(64, MsbOption::ONE, false).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&subject.build()).unwrap();
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&days(from)).unwrap();
        b.set_not_after(&days(to)).unwrap();
        let mut san = SubjectAlternativeName::new();
        for n in names {
            san.dns(n);
        }
        let san = san
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        Pair {
            chain: String::from_utf8(cert.to_pem().unwrap()).unwrap(),
            key: String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            serial: serial.to_hex_str().unwrap().to_ascii_lowercase(),
        }
    }
}

impl Pair {
    /// Writes `cert_dir/name/{fullchain,privkey}.pem`.
    pub fn write(&self, cert_dir: &Path, name: &str) {
        let dir = cert_dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        // Written aside and renamed, as certbot does, so no half file is seen.
        for (file, pem) in [("fullchain.pem", &self.chain), ("privkey.pem", &self.key)] {
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, dir.join(file)).unwrap();
        }
    }
}

/// What `curl` did: its exit code, the `-w` output and its error text.
pub struct Curl {
    pub code: i32,
    pub out: String,
    pub err: String,
}

/// `curl -s --resolve host:port:127.0.0.1 --cacert ca <extra> https://host:port<path>`,
/// printing `status http_version`.
pub fn curl_https(tls: SocketAddr, host: &str, path: &str, ca: &Path, extra: &[&str]) -> Curl {
    let port = tls.port();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10"])
        .args(["-w", "%{http_code} %{http_version}"])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("running curl");
    Curl {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TLS client connection to the data plane for `sni`, verified against `ca`.
pub struct TlsConn {
    stream: SslStream<TcpStream>,
}

impl TlsConn {
    pub fn connect(addr: SocketAddr, sni: &str, ca: &Path) -> std::io::Result<TlsConn> {
        let mut builder = SslConnector::builder(SslMethod::tls()).map_err(std::io::Error::other)?;
        builder.set_ca_file(ca).map_err(std::io::Error::other)?;
        builder.set_verify(SslVerifyMode::PEER);
        builder
            .set_alpn_protos(b"\x08http/1.1")
            .map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let stream = builder
            .build()
            .connect(sni, tcp)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(TlsConn { stream })
    }

    /// The serial of the certificate the server presented (lower-case hex).
    pub fn serial(&self) -> String {
        let cert = self.stream.ssl().peer_certificate().expect("a certificate");
        let serial = cert.serial_number().to_bn().unwrap();
        serial.to_hex_str().unwrap().to_ascii_lowercase()
    }

    /// `GET path` on this connection (kept alive); the status.
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<u16> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(request.as_bytes())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        head.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))
    }
}

/// The serial of the certificate a fresh handshake for `sni` gets.
pub fn served_serial(addr: SocketAddr, sni: &str, ca: &Path) -> Option<String> {
    TlsConn::connect(addr, sni, ca).ok().map(|c| c.serial())
}
