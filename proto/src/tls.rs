//! TLS between the planes: the flags both binaries take, checked once and
//! turned into tonic's server or client configuration.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// `--tls-cert`, `--tls-key` and `--tls-ca`, the same on every binary.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsFiles {
    /// TLS between the planes: this process's certificate (PEM).
    #[arg(
        long = "tls-cert",
        env = "PORTICO_TLS_CERT",
        global = true,
        help_heading = "Security"
    )]
    pub cert: Option<PathBuf>,
    /// TLS between the planes: the key of --tls-cert (PEM).
    #[arg(
        long = "tls-key",
        env = "PORTICO_TLS_KEY",
        global = true,
        help_heading = "Security"
    )]
    pub key: Option<PathBuf>,
    /// TLS between the planes: the authority that signs the other side's
    /// certificate (PEM). On the control plane, clients must present one.
    #[arg(
        long = "tls-ca",
        env = "PORTICO_TLS_CA",
        global = true,
        help_heading = "Security"
    )]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert and --tls-key go together")]
    Pair,
    #[error("the server needs --tls-cert and --tls-key to use TLS")]
    ServerIdentity,
    #[error("TLS needs an https:// control plane url, got {0}")]
    Scheme(String),
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.clone(),
        source,
    })
}

impl TlsFiles {
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some()
    }

    fn identity(&self) -> Result<Option<Identity>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(read(cert)?, read(key)?))),
            (None, None) => Ok(None),
            _ => Err(TlsError::Pair),
        }
    }

    /// The control plane's side: its identity, and with `--tls-ca` every
    /// client (data plane or operator) must present a certificate it signed.
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let identity = self.identity()?.ok_or(TlsError::ServerIdentity)?;
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
    }

    /// A client's side, for the control plane at `url`: trust `--tls-ca`
    /// (else the system roots) and present `--tls-cert` when given.
    pub fn client(&self, url: &str) -> Result<Option<ClientTlsConfig>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        if !url.starts_with("https://") {
            return Err(TlsError::Scheme(url.to_string()));
        }
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some(identity) = self.identity()? {
            config = config.identity(identity);
        }
        Ok(Some(config))
    }
}
