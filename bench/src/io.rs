//! Connections of the generator: TCP on glommio, optionally TLS (rustls).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::scenario::BenchError;

/// A byte stream to a broker: TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub(crate) struct Stream(Box<dyn Io>);

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_close(cx)
    }
}

/// How to reach the broker.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub host: String,
    pub tls: Option<(
        futures_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl Dialer {
    /// Opens a connection (TCP_NODELAY; TLS when configured).
    pub async fn connect(&self) -> Result<Stream, BenchError> {
        let host = &self.host;
        let tcp = TcpStream::connect(host.as_str())
            .await
            .map_err(|e| BenchError::Connection(format!("{host}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream(Box::new(tcp))),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| BenchError::Connection(format!("{host}: TLS: {e}")))?;
                Ok(Stream(Box::new(tls)))
            }
        }
    }
}

/// A TLS client configuration: trust `ca` (PEM), or nothing at all when `insecure`
/// (benchmarks against self-signed test certificates only). ALPN offers `alpn`.
pub(crate) fn tls_connector(
    host: &str,
    ca: Option<&std::path::Path>,
    insecure: bool,
    alpn: &[&[u8]],
) -> Result<
    (
        futures_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
    BenchError,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Scenario(e.to_string()))?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let ca = ca.ok_or_else(|| {
            BenchError::Scenario(
                "TLS needs --ca <PEM of the CA to trust> (or --insecure for a test certificate)"
                    .into(),
            )
        })?;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| BenchError::Scenario(format!("cannot read {}: {e}", ca.display())))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| BenchError::Scenario(format!("bad CA certificate: {e}")))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name_part = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(name_part.to_owned())
        .map_err(|e| BenchError::Scenario(format!("bad TLS server name {name_part}: {e}")))?;
    Ok((futures_rustls::TlsConnector::from(Arc::new(cfg)), name))
}

/// Accepts any certificate (`--insecure`).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads once into `buf` (growing it); `Ok(0)` at end of stream.
pub(crate) async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut bytes::BytesMut,
    chunk: &mut [u8],
) -> Result<usize, BenchError> {
    use futures_lite::io::AsyncReadExt;
    let n = r
        .read(chunk)
        .await
        .map_err(|e| BenchError::Connection(e.to_string()))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Writes all of `b`.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    b: &[u8],
) -> Result<(), BenchError> {
    use futures_lite::io::AsyncWriteExt;
    w.write_all(b)
        .await
        .map_err(|e| BenchError::Connection(e.to_string()))
}
