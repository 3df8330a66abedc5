//! TLS to the worker: one rustls configuration (ring provider) shared by the
//! HTTP client and every WebSocket link, so both trust exactly the same
//! roots and nothing on this path links OpenSSL.
//!
//! Trust is the platform's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
//! honoured, as by OpenSSL) plus `--ca-file` for a private CA or a local
//! development certificate. A certificate that does not verify is never
//! worked around: the bridge refuses to start and says which URL and why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tracing::{debug, warn};

/// Why no TLS configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--ca-file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The client configuration for every connection to the worker.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        debug!("a platform certificate could not be loaded: {error}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "platform roots");
    if let Some(path) = ca_file {
        for certificate in ca_certificates(path)? {
            roots.add(certificate).map_err(|e| TlsError::CaFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        warn!("no trusted root certificates: https:// worker URLs will fail (install ca-certificates or pass --ca-file)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certificates.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

/// The certificate problem somewhere in `error`'s causes, if that is what
/// failed: the one connection error that retrying cannot fix.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(rustls::Error::InvalidCertificate(why)) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("{why:?}"));
        }
        // io::Error hides its inner error from `source()`; look inside.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = certificate_problem(inner) {
                return Some(found);
            }
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_certificate_error_inside_io_errors() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(rustls);
        assert_eq!(certificate_problem(&io).as_deref(), Some("UnknownIssuer"));
        let other = std::io::Error::other("connection refused");
        assert_eq!(certificate_problem(&other), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("no-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        assert!(client_config(Some(Path::new("/nonexistent/ca.pem"))).is_err());
        let _ = std::fs::remove_file(path);
    }
}
