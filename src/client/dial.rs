//! Dialling for the async client: time limits, refusals, and TLS with a custom CA.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The server refused the connection (an upgrade answered with an error status, a refused
/// token or protocol version): retrying cannot fix it.
#[derive(Debug)]
pub(crate) struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by the server: {}", self.0)
    }
}

impl std::error::Error for Refused {}

pub(crate) fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Refused>().is_some()
}

/// A time limit that passed.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `f` for at most `d`.
pub(crate) async fn within<T, E: Into<anyhow::Error>>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T> {
    futures_lite::future::or(async { f.await.map_err(Into::into) }, async {
        async_io::Timer::after(d).await;
        Err(anyhow::Error::new(Elapsed))
    })
    .await
}

/// A TLS connector trusting the CA certificates in `ca` (PEM).
pub(crate) fn tls_connector(
    host: &str,
    ca: &std::path::Path,
) -> Result<(
    futures_rustls::TlsConnector,
    rustls_pki_types::ServerName<'static>,
)> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read CA certificates from {}", ca.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", ca.display());
    }
    for c in certs {
        roots.add(c).context("bad CA certificate")?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(name.to_owned())
        .with_context(|| format!("bad TLS server name {name}"))?;
    Ok((futures_rustls::TlsConnector::from(Arc::new(cfg)), name))
}
