//! Client-facing TLS (rustls, ring provider) and the PEM loading node links share.

use std::sync::Arc;

use crate::error::ServeError;

/// Builds the TLS configuration from PEM files: a certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). ALPN offers `h2` and `http/1.1`.
pub fn tls_from_pem(
    cert_chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    tls_config(read_pem_certs(cert_chain)?, read_pem_key(key)?)
}

/// The certificates in a PEM file (at least one).
pub(crate) fn read_pem_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            ServeError::Tls(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn read_pem_key(
    path: &std::path::Path,
) -> Result<rustls_pki_types::PrivateKeyDer<'static>, ServeError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_file(path).map_err(|e| {
        ServeError::Tls(format!(
            "cannot read a private key from {}: {e}",
            path.display()
        ))
    })
}

/// Builds the TLS configuration from DER certificates and key (ring provider, TLS 1.2 and 1.3).
pub fn tls_config(
    certs: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
