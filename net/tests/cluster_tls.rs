//! The storage side of a node link under mutual TLS, driven by a hand-made router (rustls
//! client, link frames from the proto crate): what a peer must present before anything it
//! sends is read.

mod common;
#[path = "../../tests/common/eventually.rs"]
mod eventually;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fanfare_net::cluster::{ClusterConfig, LinkTls, Roles};
use fanfare_net::Server;
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::{framing, LinkMsg, Start};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Pki {
            ca: rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap())
                .unwrap(),
        }
    }

    fn ca(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A node certificate naming `id`, for server and client authentication.
    fn node(&self, id: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![id.to_owned()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// A storage node `s1` whose links require mutual TLS.
fn storage(p: &Pki) -> Server {
    let (cert, key) = p.node("s1");
    let tls = LinkTls::new(vec![p.ca()], vec![cert], key, "s1").unwrap();
    common::server_with(|c| {
        let mut cc = ClusterConfig::default();
        cc.node_id = "s1".into();
        cc.roles = Roles {
            router: false,
            storage: true,
        };
        cc.listen = "127.0.0.1:0".parse().unwrap();
        cc.tls = Some(Arc::new(tls));
        c.cluster = Some(cc);
    })
}

/// A router's TLS client, presenting `client` (or no certificate).
fn connector(
    p: &Pki,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((c, k)) => b.with_client_auth_cert(vec![c], k).unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"fanfare-link/1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Link = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn open(addr: SocketAddr, c: &tokio_rustls::TlsConnector) -> std::io::Result<Link> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    c.connect(ServerName::try_from("s1").unwrap(), tcp).await
}

async fn send(l: &mut Link, m: &LinkMsg) -> std::io::Result<()> {
    l.write_all(&framing::encode_to_bytes(&m.encode_to_vec()))
        .await?;
    l.flush().await
}

/// The next frame, or `None` once the storage node closed the link (or 5 s passed).
async fn recv(l: &mut Link, buf: &mut BytesMut) -> Option<LinkMsg> {
    let d = framing::Decoder::new(1 << 20);
    let read = async {
        loop {
            if let Some(body) = d.decode(buf).unwrap() {
                return Some(LinkMsg::decode(&body, &DecodeLimits::default()).unwrap());
            }
            let mut chunk = [0u8; 4096];
            match l.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

fn hello(id: &str) -> LinkMsg {
    LinkMsg::Hello {
        version: 1,
        node_id: id.into(),
        shard: 0,
    }
}

/// Waits (with a deadline) until the auth failure counter reads `n`: the storage node counts
/// a refusal on its own thread, possibly after the peer already saw the connection end.
fn wait_auth_failures(srv: &Server, n: u64) {
    eventually::eventually(&format!("{n} auth failures"), common::WAIT, || {
        let got = auth_failures(srv);
        if got == n {
            Ok(())
        } else {
            Err(got)
        }
    });
}

fn auth_failures(srv: &Server) -> u64 {
    common::raw(
        srv.local_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .lines()
    .filter(|l| l.starts_with("fanfare_net_cluster_link_auth_failures_total{"))
    .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
    .sum()
}

#[test]
fn storage_links_demand_a_certificate_naming_the_hello() {
    let p = Pki::new();
    let srv = storage(&p);
    let addr = srv.cluster_addr().unwrap();
    let router = connector(&p, Some(p.node("r1")));
    common::rt().block_on(async {
        // A router with a certificate naming the id of its hello: served.
        let mut l = open(addr, &router).await.expect("handshake");
        send(&mut l, &hello("r1")).await.unwrap();
        let mut buf = BytesMut::new();
        match recv(&mut l, &mut buf).await {
            Some(LinkMsg::Hello { node_id, .. }) => assert_eq!(node_id, "s1"),
            m => panic!("expected the storage node's hello, got {m:?}"),
        }
        send(
            &mut l,
            &LinkMsg::Interest {
                request_id: 7,
                namespace: "t".try_into().unwrap(),
                topic: "x".try_into().unwrap(),
                subscribe: true,
                from: Start::Latest,
            },
        )
        .await
        .unwrap();
        match recv(&mut l, &mut buf).await {
            Some(LinkMsg::Subscribed { request_id, .. }) => assert_eq!(request_id, 7),
            m => panic!("expected Subscribed, got {m:?}"),
        }
        send(
            &mut l,
            &LinkMsg::Publish {
                request_id: 8,
                namespace: "t".try_into().unwrap(),
                topic: "x".try_into().unwrap(),
                payload: Bytes::from_static(b"hi"),
                publisher_id: None,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
        let mut acked = false;
        let mut item = false;
        while !(acked && item) {
            match recv(&mut l, &mut buf).await {
                Some(LinkMsg::PublishAck { request_id: 8, .. }) => acked = true,
                Some(LinkMsg::ItemBatch { items, .. }) => {
                    assert_eq!(items[0].payload, Bytes::from_static(b"hi"));
                    item = true;
                }
                m => panic!("expected the ack and the item, got {m:?}"),
            }
        }
        assert_eq!(auth_failures(&srv), 0);

        // The same certificate claiming another node id in its hello: closed after the hello.
        let mut l = open(addr, &router).await.expect("handshake");
        send(&mut l, &hello("s2")).await.unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(
            recv(&mut l, &mut buf).await,
            Some(LinkMsg::Hello { .. })
        ));
        let _ = send(
            &mut l,
            &LinkMsg::Interest {
                request_id: 9,
                namespace: "t".try_into().unwrap(),
                topic: "x".try_into().unwrap(),
                subscribe: true,
                from: Start::Latest,
            },
        )
        .await;
        assert!(
            recv(&mut l, &mut buf).await.is_none(),
            "an impersonating hello is not served"
        );
        wait_auth_failures(&srv, 1);

        // No client certificate: refused in the handshake (TLS 1.3 reports it on first read).
        let anonymous = connector(&p, None);
        if let Ok(mut l) = open(addr, &anonymous).await {
            let _ = send(&mut l, &hello("r1")).await;
            let mut buf = BytesMut::new();
            assert!(recv(&mut l, &mut buf).await.is_none());
        }
        // Plaintext: refused too.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&framing::encode_to_bytes(&hello("r1").encode_to_vec()))
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
            .await
            .expect("closed by the storage node");
        // At most a TLS alert record (content type 21), never a link frame.
        assert!(
            got.is_empty() || got[0] == 21,
            "a plaintext peer got {got:?}"
        );
        wait_auth_failures(&srv, 3);
    });
    drop(srv);
}
