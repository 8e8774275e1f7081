//! The async client (`fanfare::client::AsyncClient`) against in-process servers: under tokio
//! and under glommio, resuming through a cut connection with no gap and no duplicate, after a
//! server restart with one exact discontinuity, and over wss:// with a custom CA.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare::client::{AsyncClient, ClientOptions, Event};
use fanfare::proto::Start;
use fanfare_net::{Server, ServerConfig};

fn server_on(listen: SocketAddr, tls: Option<&Pki>) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.listen = listen;
    cfg.engine.shards = 2;
    cfg.engine.drain_timeout = Duration::from_secs(1);
    if let Some(p) = tls {
        cfg.tls = Some(fanfare_net::tls_config(vec![p.cert.clone()], p.key.clone_key()).unwrap());
    }
    fanfare_net::start(cfg).expect("server starts")
}

fn opts(url: String) -> ClientOptions {
    let mut o = ClientOptions::new(url);
    o.reconnect_min = Duration::from_millis(20);
    o.reconnect_max = Duration::from_millis(200);
    o
}

/// A TCP proxy whose connections the test can cut.
struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn to(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let c = conns.clone();
        std::thread::spawn(move || {
            for down in l.incoming().flatten() {
                let Ok(up) = TcpStream::connect(target) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                c.lock()
                    .unwrap()
                    .extend([down.try_clone().unwrap(), up.try_clone().unwrap()]);
                pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
                pipe(up, down);
            }
        });
        Proxy { addr, conns }
    }

    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn http_publish(addr: SocketAddr, topic: &str, body: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/topics/ns/{topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// Reads events until `n` messages arrived (with a deadline); returns messages and
/// discontinuities as text, and whether the subscription was resumed on the way.
async fn collect(c: &mut AsyncClient, n: usize) -> (Vec<String>, Vec<String>, bool) {
    let (mut msgs, mut discs, mut resumed) = (Vec::new(), Vec::new(), false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while msgs.len() < n {
        assert!(Instant::now() < deadline, "got {msgs:?} {discs:?}");
        match c.next_event().await.unwrap() {
            Event::Message {
                epoch,
                seq,
                payload,
                ..
            } => msgs.push(format!(
                "{epoch}-{seq} {}",
                String::from_utf8_lossy(&payload)
            )),
            Event::Discontinuity {
                last_epoch,
                last_seq,
                new_epoch,
                new_seq,
                ..
            } => discs.push(format!("{last_epoch}-{last_seq} -> {new_epoch}-{new_seq}")),
            Event::Subscribed { resumed: true, .. } => resumed = true,
            _ => {}
        }
    }
    (msgs, discs, resumed)
}

async fn resume_through_a_cut(srv: &Server) {
    let proxy = Proxy::to(srv.local_addr());
    let mut c = AsyncClient::connect(opts(format!("ws://{}/v1/ws", proxy.addr)))
        .await
        .unwrap();
    c.subscribe("ns", "cut", Start::Latest).await.unwrap();
    // The subscription is live once its first event came.
    loop {
        if let Event::Subscribed { resumed, .. } = c.next_event().await.unwrap() {
            assert!(!resumed);
            break;
        }
    }
    let a = c
        .publish("ns", "cut", Bytes::from_static(b"m1"), None)
        .await
        .unwrap();
    let (first, _, _) = collect(&mut c, 1).await;
    proxy.cut();
    // Published while the connection is down; history covers it.
    http_publish(srv.local_addr(), "cut", "m2");
    http_publish(srv.local_addr(), "cut", "m3");
    let (rest, discs, resumed) = collect(&mut c, 2).await;
    assert!(resumed, "the cut connection was replaced");
    let e = a.0;
    assert_eq!(first, [format!("{e}-1 m1")]);
    assert_eq!(rest, [format!("{e}-2 m2"), format!("{e}-3 m3")]);
    assert!(discs.is_empty(), "{discs:?}");
    assert_eq!(c.position("ns", "cut"), Some((e, 4)));
}

#[test]
fn resumes_through_a_cut_connection_under_tokio() {
    let srv = server_on("127.0.0.1:0".parse().unwrap(), None);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(resume_through_a_cut(&srv));
}

#[test]
fn resumes_through_a_cut_connection_under_glommio() {
    let srv = server_on("127.0.0.1:0".parse().unwrap(), None);
    let addr = srv.local_addr();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            // The server is owned by the test thread; only its address crosses.
            let srv_addr = addr;
            let proxy = Proxy::to(srv_addr);
            let mut c = AsyncClient::connect(opts(format!("ws://{}/v1/ws", proxy.addr)))
                .await
                .unwrap();
            c.subscribe("ns", "g", Start::Latest).await.unwrap();
            let p = c
                .publish("ns", "g", Bytes::from_static(b"x"), None)
                .await
                .unwrap();
            let (got, _, _) = collect(&mut c, 1).await;
            assert_eq!(got, [format!("{}-1 x", p.0)]);
            proxy.cut();
            http_publish(srv_addr, "g", "y");
            let (got, discs, resumed) = collect(&mut c, 1).await;
            assert_eq!(got, [format!("{}-2 y", p.0)]);
            assert!(discs.is_empty() && resumed);
        })
        .unwrap()
        .join()
        .unwrap();
    drop(srv);
}

#[test]
fn a_restarted_server_gives_one_exact_discontinuity_and_publishes_wait_for_it() {
    let srv = server_on("127.0.0.1:0".parse().unwrap(), None);
    let addr = srv.local_addr();
    futures_lite::future::block_on(async {
        let mut c = AsyncClient::connect(opts(format!("ws://{addr}/v1/ws")))
            .await
            .unwrap();
        c.subscribe("ns", "restart", Start::Latest).await.unwrap();
        let (e1, s1) = c
            .publish("ns", "restart", Bytes::from_static(b"before"), None)
            .await
            .unwrap();
        let _ = collect(&mut c, 1).await;
        srv.shutdown();
        drop(srv);
        // A new server (new epochs) on the same address, a moment later.
        let srv = server_on(addr, None);
        let (e2, s2) = c
            .publish("ns", "restart", Bytes::from_static(b"after"), None)
            .await
            .unwrap();
        let (got, discs, resumed) = collect(&mut c, 1).await;
        assert!(resumed);
        assert_ne!(e2, e1);
        assert_eq!(got, [format!("{e2}-{s2} after")]);
        assert_eq!(discs, [format!("{e1}-{s1} -> {e2}-1")]);
        drop(srv);
    });
}

struct Pki {
    ca_pem: String,
    cert: rustls_pki_types::CertificateDer<'static>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
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
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        key: rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )),
    }
}

#[test]
fn wss_with_a_custom_ca() {
    let p = pki();
    let srv = server_on("127.0.0.1:0".parse().unwrap(), Some(&p));
    let port = srv.local_addr().port();
    let dir = std::env::temp_dir().join(format!("fanfare-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    futures_lite::future::block_on(async {
        let url = format!("wss://localhost:{port}/v1/ws");
        let e = AsyncClient::connect(opts(url.clone())).await.err().unwrap();
        assert!(format!("{e:#}").contains("needs the CA"), "{e:#}");
        let mut o = opts(url);
        o.ca = Some(ca);
        let mut c = AsyncClient::connect(o).await.unwrap();
        c.subscribe("ns", "tls", Start::Latest).await.unwrap();
        let (e, s) = c
            .publish("ns", "tls", Bytes::from_static(b"secret"), None)
            .await
            .unwrap();
        let (got, _, _) = collect(&mut c, 1).await;
        assert_eq!(got, [format!("{e}-{s} secret")]);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
