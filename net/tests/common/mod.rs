//! Helpers shared by the network tests: a server on port 0, a WebSocket client
//! (tokio-tungstenite) speaking the flatbuffers protocol, raw HTTP and curl.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use fanfare_net::{Server, ServerConfig};
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::{ClientMsg, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn server_with(f: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.engine.shards = 2;
    cfg.engine.drain_timeout = Duration::from_secs(2);
    f(&mut cfg);
    fanfare_net::start(cfg).expect("server starts")
}

pub fn server() -> Server {
    server_with(|_| {})
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws(addr: SocketAddr) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

pub async fn send(ws: &mut Ws, m: ClientMsg) {
    ws.send(Message::Binary(m.encode_to_vec()))
        .await
        .expect("send");
}

/// The next server message (skipping heartbeats and pings).
pub async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("ok");
        match m {
            Message::Binary(b) => {
                let msg = ServerMsg::decode(&Bytes::from(b.to_vec()), &DecodeLimits::default())
                    .expect("decodes");
                if !matches!(msg, ServerMsg::Heartbeat { .. }) {
                    return msg;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("install curl to run this test (`bash .ci/test` installs it with apt-get)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw HTTP exchange: sends `req`, returns everything read until close or `wait`.
pub fn raw(addr: SocketAddr, req: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}
