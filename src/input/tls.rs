//! PEM loading for the health checker's TLS settings, with errors that name
//! the file and the config key.

use std::path::Path;

/// Checks that a PEM file named by a config key is readable and holds what
/// that key needs (certificates, or a private key).
pub fn check_pem_file(path: &Path, key: &str) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if key.ends_with("key_file") {
        let mut rd = &data[..];
        match rustls_pemfile::private_key(&mut rd) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("{} holds no PEM private key", path.display())),
            Err(e) => Err(format!("{} is not valid PEM: {e}", path.display())),
        }
    } else {
        let certs = load_certs(path)?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        Ok(())
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut rd = &data[..];
    let mut out = Vec::new();
    for c in rustls_pemfile::certs(&mut rd) {
        let c = c.map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
        out.push(c.to_vec());
    }
    Ok(out)
}
