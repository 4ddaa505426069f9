//! TLS to etcd: the CA trusted for its certificate and this replica's
//! client certificate, read from PEM files.

/// TLS to etcd (`--etcd-tls-ca`, `--etcd-tls-cert`, `--etcd-tls-key`;
/// https endpoints).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// Trusted for etcd's certificate (else the system's roots).
    pub ca: Option<std::path::PathBuf>,
    /// This replica's client certificate and key, for etcd's
    /// `--client-cert-auth`.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl EtcdTls {
    pub(super) fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    pub(super) fn options(&self) -> Result<etcd_client::TlsOptions, String> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))
        };
        let mut tls = etcd_client::TlsOptions::new();
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?)),
            None => tls.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                Ok(tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?)))
            }
            (None, None) => Ok(tls),
            _ => Err("--etcd-tls-cert and --etcd-tls-key go together".into()),
        }
    }
}
