//! The health checker's TLS material (`health.ca_file`, `cert_file`,
//! `key_file`), read and checked once per config load: the CA roots, and
//! the client identity when one is set, built into a rustls client config.
//! `--check-config`, start and reload all get it from
//! [`crate::input::config::Config::parse`]; the checker only uses it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS setting that cannot be used: the config key, and why (naming the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsError {
    /// The config key at fault (`health.ca_file`, `health.cert_file`, `health.key_file`).
    pub key: &'static str,
    /// Why the file cannot be used, naming it.
    pub reason: String,
}

/// Trust stores tried when `health.ca_file` is not set.
const SYSTEM_BUNDLES: [&str; 3] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The checker's TLS client config, built from the files once. Two values
/// are equal when they were built from the same file contents, so a reload
/// with unchanged files keeps the checks (and their connections) running,
/// and a rotated certificate is picked up.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    /// The bytes of every file read, in order (what equality compares).
    source: Arc<Vec<u8>>,
    /// SHA-256 of every certificate of `ca_file` (empty without one): the
    /// CA identity guard compares what a CA master serves with these.
    ca_fingerprints: Arc<Vec<Fingerprint>>,
}

/// The SHA-256 fingerprint of a certificate's DER encoding, shown as
/// `SHA256:AB:CD:...` (the form `openssl x509 -fingerprint -sha256` and
/// `puppet ssl` print, with the algorithm in front).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of one DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(d.as_ref()) {
            *o = *b;
        }
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The certificates of a PEM text, in order (PEM blocks of other kinds are
/// skipped). `None` when a certificate block is not valid PEM/base64.
pub fn pem_certificates(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>().ok()
}

impl ClientTls {
    /// Reads and checks the files: roots from `ca_file` (else the system
    /// bundle), client identity from `cert_file` + `key_file` (both or
    /// neither). Every error names the key and the file.
    pub fn load(ca_file: Option<&Path>, cert_file: Option<&Path>, key_file: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut source = Vec::new();
        let mut roots = RootCertStore::empty();
        let mut ca_fingerprints = Vec::new();
        match ca_file {
            Some(p) => {
                let certs = read_certs(p, "health.ca_file", &mut source)?;
                ca_fingerprints = certs.iter().map(|c| Fingerprint::of_der(c.as_ref())).collect();
                for (i, c) in certs.into_iter().enumerate() {
                    roots.add(c).map_err(|e| TlsError {
                        key: "health.ca_file",
                        reason: format!("{}: certificate {} is not a usable CA certificate: {e}", p.display(), i + 1),
                    })?;
                }
            }
            None => {
                let bundle = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.exists());
                if let Some(Ok(certs)) = bundle.map(|p| read_certs(p, "health.ca_file", &mut source)) {
                    roots.add_parsable_certificates(certs);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError { key: "health", reason: format!("TLS setup: {e}") })?
            .with_root_certificates(roots);
        let config = match (cert_file, key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "health.cert_file", &mut source)?;
                let der = read_key(key, &mut source)?;
                builder.with_client_auth_cert(chain, der).map_err(|e| TlsError {
                    key: "health.key_file",
                    reason: format!("{} does not go with {}: {e}", key.display(), cert.display()),
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(TlsError { key: "health.key_file", reason: "cert_file and key_file must be set together".into() });
            }
            (None, Some(_)) => {
                return Err(TlsError { key: "health.cert_file", reason: "cert_file and key_file must be set together".into() });
            }
        };
        Ok(ClientTls { config: Arc::new(config), source: Arc::new(source), ca_fingerprints: Arc::new(ca_fingerprints) })
    }

    /// The same as [`ClientTls::load`] for paths kept as `Option<PathBuf>`.
    pub fn load_paths(ca_file: &Option<PathBuf>, cert_file: &Option<PathBuf>, key_file: &Option<PathBuf>) -> Result<ClientTls, TlsError> {
        ClientTls::load(ca_file.as_deref(), cert_file.as_deref(), key_file.as_deref())
    }

    /// The fingerprints of the certificates of `health.ca_file`, in file
    /// order; empty when it is not set (the CA guard is then off).
    pub fn ca_fingerprints(&self) -> &[Fingerprint] {
        &self.ca_fingerprints
    }

    /// The rustls client config the checks connect with.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        self.source == other.source
    }
}

impl Eq for ClientTls {}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("bytes_read", &self.source.len()).finish_non_exhaustive()
    }
}

fn read(p: &Path, key: &'static str, source: &mut Vec<u8>) -> Result<Vec<u8>, TlsError> {
    let data = std::fs::read(p).map_err(|e| TlsError { key, reason: format!("cannot read {}: {e}", p.display()) })?;
    source.extend_from_slice(&data);
    Ok(data)
}

fn read_certs(p: &Path, key: &'static str, source: &mut Vec<u8>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read(p, key, source)?;
    let mut certs = Vec::new();
    for c in rustls_pemfile::certs(&mut &data[..]) {
        certs.push(c.map_err(|e| TlsError { key, reason: format!("{} is not valid PEM: {e}", p.display()) })?);
    }
    if certs.is_empty() {
        return Err(TlsError { key, reason: format!("{} holds no PEM certificate", p.display()) });
    }
    Ok(certs)
}

fn read_key(p: &Path, source: &mut Vec<u8>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key = "health.key_file";
    let data = read(p, key, source)?;
    match rustls_pemfile::private_key(&mut &data[..]) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(TlsError { key, reason: format!("{} holds no PEM private key", p.display()) }),
        Err(e) => Err(TlsError { key, reason: format!("{} is not valid PEM: {e}", p.display()) }),
    }
}
