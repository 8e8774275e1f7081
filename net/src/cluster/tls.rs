//! Securing node links and gossip.
//!
//! - [`LinkTls`]: mutual TLS 1.3 on node links. Every node holds a certificate issued by the
//!   cluster's CA that names its node id (a DNS subjectAltName). A router checks the storage
//!   node it dialled presents a certificate for the node id the membership gives for that
//!   address; a storage node checks the router's certificate chains to the CA and names the
//!   node id the router announces in its hello. A certificate from another CA, for another
//!   node id, or no certificate at all closes the link before any message is read.
//! - [`GossipKey`]: an HMAC-SHA256 tag on every gossip datagram; datagrams without a valid tag
//!   are dropped, so a host without the key can neither join nor declare members down.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::error::ServeError;

/// ALPN protocol of node links (keeps a link handshake from ever passing for client traffic).
const LINK_ALPN: &[u8] = b"fanfare-link/1";

/// Mutual TLS for node links: this node's certificate and the cluster CA.
pub struct LinkTls {
    connector: futures_rustls::TlsConnector,
    acceptor: futures_rustls::TlsAcceptor,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkTls { .. }")
    }
}

impl LinkTls {
    /// Loads the cluster CA certificates, this node's certificate chain (leaf first) and its
    /// private key from PEM files. The leaf must name `node_id`.
    pub fn from_pem(
        ca: &Path,
        cert_chain: &Path,
        key: &Path,
        node_id: &str,
    ) -> Result<Self, ServeError> {
        let ca = crate::tls::read_pem_certs(ca)?;
        let chain = crate::tls::read_pem_certs(cert_chain)?;
        let key = crate::tls::read_pem_key(key)?;
        Self::new(ca, chain, key, node_id)
    }

    /// Builds both ends from DER: the CA certificates every node's certificate must chain to,
    /// this node's chain (leaf first) and its key. The leaf must name `node_id`.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        node_id: &str,
    ) -> Result<Self, ServeError> {
        let err = |s: String| ServeError::Tls(format!("node links: {s}"));
        let name = server_name(node_id).map_err(err)?;
        let leaf = chain
            .first()
            .ok_or_else(|| err("no node certificate".into()))?;
        if !cert_names(leaf, &name) {
            return Err(err(format!(
                "the node certificate does not name node id {node_id:?} (give it as a DNS \
                 subjectAltName)"
            )));
        }
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(ca);
        if added == 0 {
            return Err(err("no usable CA certificate".into()));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(tls13)
            .map_err(|e| err(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| err(format!("certificate and key do not fit: {e}")))?;
        server.alpn_protocols = vec![LINK_ALPN.to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(tls13)
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| err(format!("certificate and key do not fit: {e}")))?;
        client.alpn_protocols = vec![LINK_ALPN.to_vec()];

        Ok(LinkTls {
            connector: futures_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Router side: TLS over `tcp` to the storage node `node_id`, whose certificate must name
    /// it.
    pub(crate) async fn connect(
        &self,
        node_id: &str,
        tcp: glommio::net::TcpStream,
    ) -> Result<futures_rustls::client::TlsStream<glommio::net::TcpStream>, String> {
        let name = server_name(node_id)?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {node_id:?}: {e}"))
    }

    /// Storage side: TLS over an accepted `tcp`; the router must present a certificate from
    /// the cluster CA. Returns the stream and the router's certificate, checked against its
    /// hello with [`LinkTls::names`].
    pub(crate) async fn accept(
        &self,
        tcp: glommio::net::TcpStream,
    ) -> Result<
        (
            futures_rustls::server::TlsStream<glommio::net::TcpStream>,
            CertificateDer<'static>,
        ),
        String,
    > {
        let s = self
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let cert = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
            .ok_or_else(|| "no client certificate".to_owned())?;
        Ok((s, cert))
    }

    /// Whether `cert` names node `node_id`.
    pub(crate) fn names(cert: &CertificateDer<'_>, node_id: &str) -> bool {
        server_name(node_id).is_ok_and(|n| cert_names(cert, &n))
    }
}

fn server_name(node_id: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(node_id.to_owned()).map_err(|_| {
        format!(
            "node id {node_id:?} is not a valid DNS name or IP address, so no certificate can \
             name it (use letters, digits, '-' and '.')"
        )
    })
}

/// Whether `cert` is valid for `name` (its subjectAltNames).
fn cert_names(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    webpki::EndEntityCert::try_from(cert)
        .and_then(|c| c.verify_is_valid_for_subject_name(name))
        .is_ok()
}

/// Length of a gossip datagram's tag.
pub(crate) const GOSSIP_TAG_BYTES: usize = 32;

/// Shared secret authenticating gossip datagrams (HMAC-SHA256).
#[derive(Clone)]
pub struct GossipKey(ring::hmac::Key);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

impl GossipKey {
    /// Fewest secret bytes accepted.
    pub const BYTES_MIN: usize = 32;

    /// A key from secret bytes (at least [`GossipKey::BYTES_MIN`]; e.g. the text of
    /// `openssl rand -hex 32`).
    pub fn new(secret: &[u8]) -> Result<Self, ServeError> {
        if secret.len() < Self::BYTES_MIN {
            return Err(ServeError::Cluster(format!(
                "the gossip key has {} bytes; use at least {} (e.g. `openssl rand -hex 32`)",
                secret.len(),
                Self::BYTES_MIN
            )));
        }
        Ok(GossipKey(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            secret,
        )))
    }

    /// Reads the key from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read(path).map_err(|e| {
            ServeError::Cluster(format!(
                "cannot read the gossip key {}: {e}",
                path.display()
            ))
        })?;
        Self::new(text.trim_ascii())
    }

    /// Appends the tag of `data` to it.
    pub(crate) fn seal(&self, data: &mut Vec<u8>) {
        let tag = ring::hmac::sign(&self.0, data);
        data.extend_from_slice(tag.as_ref());
    }

    /// The datagram without its tag, if the tag is right.
    pub(crate) fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let at = datagram.len().checked_sub(GOSSIP_TAG_BYTES)?;
        let (data, tag) = datagram.split_at(at);
        ring::hmac::verify(&self.0, data, tag).ok()?;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_tags_check_content_and_key() {
        let k = GossipKey::new(&[7u8; 32]).unwrap();
        let other = GossipKey::new(&[8u8; 32]).unwrap();
        let mut d = b"swim".to_vec();
        k.seal(&mut d);
        assert_eq!(d.len(), 4 + GOSSIP_TAG_BYTES);
        assert_eq!(k.open(&d), Some(&b"swim"[..]));
        assert_eq!(other.open(&d), None);
        let mut flipped = d.clone();
        flipped[0] ^= 1;
        assert_eq!(k.open(&flipped), None);
        assert_eq!(k.open(&d[..10]), None);
        assert_eq!(k.open(&[]), None);
        assert!(GossipKey::new(&[1u8; 31]).is_err());
    }

    fn ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rcgen::CertifiedIssuer::self_signed(p, key).unwrap()
    }

    fn node(
        issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        name: &str,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    }

    #[test]
    fn link_tls_checks_the_node_id_at_start() {
        let issuer = ca();
        let (c, k) = node(&issuer, "s1");
        let ca = vec![issuer.der().clone()];
        assert!(LinkTls::new(ca.clone(), vec![c.clone()], k.clone_key(), "s1").is_ok());
        let e = LinkTls::new(ca.clone(), vec![c.clone()], k.clone_key(), "s2").unwrap_err();
        assert!(e.to_string().contains("does not name node id"), "{e}");
        let e = LinkTls::new(ca, vec![c.clone()], k.clone_key(), "bad id!").unwrap_err();
        assert!(e.to_string().contains("not a valid DNS name"), "{e}");
        let e = LinkTls::new(vec![], vec![c.clone()], k, "s1").unwrap_err();
        assert!(e.to_string().contains("no usable CA"), "{e}");
        assert!(LinkTls::names(&c, "s1"));
        assert!(!LinkTls::names(&c, "s10"));
    }
}
