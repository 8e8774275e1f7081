//! TLS on the one port: wss and https with a test CA made by rcgen, ALPN, and plaintext
//! still served beside it.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fanfare_net::{Server, ServerConfig};
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::{ClientMsg, ServerMsg, Start};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Fanfare test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn server(p: &Pki) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.engine.shards = 2;
    cfg.engine.drain_timeout = Duration::from_secs(2);
    cfg.limits.handshake_timeout = Duration::from_millis(500);
    cfg.tls = Some(fanfare_net::tls_config(vec![p.cert.clone()], p.key.clone_key()).unwrap());
    fanfare_net::start(cfg).unwrap()
}

fn client_tls(p: &Pki, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[test]
fn wss_publish_and_receive_with_alpn() {
    let p = pki();
    let srv = server(&p);
    let addr = srv.local_addr();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = client_tls(&p, &[b"http/1.1"])
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .expect("TLS handshake with the test CA");
            assert_eq!(
                tls.get_ref().1.alpn_protocol(),
                Some(&b"http/1.1"[..]),
                "HTTP/2 is not offered yet"
            );
            let (mut ws, resp) = tokio_tungstenite::client_async(
                format!("wss://localhost:{}/v1/ws", addr.port()),
                tls,
            )
            .await
            .unwrap();
            assert_eq!(resp.status(), 101);
            let sub = ClientMsg::Subscribe {
                request_id: 1,
                namespace: "ns".try_into().unwrap(),
                topic: "secure".try_into().unwrap(),
                from: Start::Latest,
                presence: None,
            };
            ws.send(Message::Binary(sub.encode_to_vec())).await.unwrap();
            let next = |m: Option<Result<Message, _>>| match m {
                Some(Ok(Message::Binary(b))) => {
                    ServerMsg::decode(&Bytes::from(b.to_vec()), &DecodeLimits::default()).unwrap()
                }
                other => panic!("{other:?}"),
            };
            assert!(matches!(
                next(tokio::time::timeout(WAIT, ws.next()).await.unwrap()),
                ServerMsg::Subscribed { .. }
            ));
            srv.broker()
                .publish_blocking("ns", "secure", "over tls")
                .unwrap();
            match next(tokio::time::timeout(WAIT, ws.next()).await.unwrap()) {
                ServerMsg::Item(i) => assert_eq!(i.payload, "over tls"),
                other => panic!("{other:?}"),
            }
        });
    assert!(srv.metrics().total("connections_tls") >= 1);
    srv.shutdown();
}

#[test]
fn h2_over_tls_by_alpn() {
    let p = pki();
    let srv = server(&p);
    let addr = srv.local_addr();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = client_tls(&p, &[b"h2", b"http/1.1"])
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (send, conn) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = http::Request::post(format!(
                "https://localhost:{}/v1/topics/ns/h2tls",
                addr.port()
            ))
            .body(())
            .unwrap();
            let (resp, mut body) = send
                .ready()
                .await
                .unwrap()
                .send_request(req, false)
                .unwrap();
            body.send_data(Bytes::from_static(b"hi"), true).unwrap();
            let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
            assert_eq!(resp.status(), 200);
        });
    srv.shutdown();
}

#[test]
fn https_with_curl_and_plaintext_on_the_same_port() {
    let p = pki();
    let srv = server(&p);
    let addr = srv.local_addr();
    let ca = tempfile_path("fanfare-test-ca");
    std::fs::File::create(&ca)
        .unwrap()
        .write_all(p.ca_pem.as_bytes())
        .unwrap();
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .output()
            .expect("install curl to run this test (`bash .ci/test` installs it with apt-get)");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let https = format!("https://localhost:{}", addr.port());
    let ca_arg = ca.to_str().unwrap().to_owned();
    let out = curl(&[
        "--cacert",
        &ca_arg,
        "-XPOST",
        "--data-binary",
        "one",
        &format!("{https}/v1/topics/ns/t"),
    ]);
    assert!(out.contains("\"seq\":1"), "{out}");
    let out = curl(&[
        "--cacert",
        &ca_arg,
        "-N",
        "-H",
        "Accept: text/event-stream",
        &format!("{https}/v1/topics/ns/t?from=last:1"),
        "--max-time",
        "1",
    ]);
    assert!(out.contains("data: one"), "{out}");
    // An untrusted client refuses the certificate.
    let out = curl(&[&format!("{https}/healthz")]);
    assert!(out.contains("certificate"), "{out}");
    // Plaintext beside TLS.
    assert_eq!(curl(&[&format!("http://{addr}/healthz")]), "ok");
    // A client that opens TLS and stalls is dropped at the handshake deadline: the server
    // closes the connection (a read that times out instead means it never did) and counts it.
    let timed_out = srv.metrics().total("limit_handshake_time");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break,
            Ok(_) => {} // an alert, say
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the stalled handshake was not closed within {WAIT:?}"
                );
                break; // reset
            }
        }
    }
    assert_eq!(srv.metrics().total("limit_handshake_time"), timed_out + 1);
    let _ = std::fs::remove_file(&ca);
    srv.shutdown();
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "{name}-{}-{:?}.pem",
        std::process::id(),
        std::thread::current().id()
    ))
}
