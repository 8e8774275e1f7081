//! Interoperability with a WebSocket implementation no one here wrote (tungstenite, as a
//! client): its handshake and frames decode with ours, and our frames decode with it.

use std::io::{self, Cursor, Read, Write};

use bytes::{Bytes, BytesMut};
use fanfare_proto::ws::{self, Message as Ours, Opcode, Role};
use tungstenite::protocol::{Role as TRole, WebSocket};
use tungstenite::Message;

/// An in-memory stream: reads from `input`, records writes in `output`.
struct Pipe {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}
impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn tungstenite_client_frames_decode_with_ours() {
    let pipe = Pipe {
        input: Cursor::new(Vec::new()),
        output: Vec::new(),
    };
    let mut client = WebSocket::from_raw_socket(pipe, TRole::Client, None);
    let big = vec![7u8; 70_000];
    client.send(Message::Binary(big.clone())).unwrap();
    client.send(Message::Text("héllo".into())).unwrap();
    client.send(Message::Ping(vec![1, 2, 3])).unwrap();
    client
        .close(Some(tungstenite::protocol::CloseFrame {
            code: 1000u16.into(),
            reason: "done".into(),
        }))
        .unwrap();
    let _ = client.flush();
    let wire = std::mem::take(&mut client.get_mut().output);

    let mut d = ws::Decoder::new(Role::Server, ws::Limits::default());
    let mut buf = BytesMut::from(&wire[..]);
    let mut got = Vec::new();
    while let Some(m) = d.decode(&mut buf).unwrap() {
        got.push(m);
    }
    assert_eq!(
        got,
        vec![
            Ours::Binary(Bytes::from(big)),
            Ours::Text(Bytes::from("héllo")),
            Ours::Ping(Bytes::from_static(&[1, 2, 3])),
            Ours::Close(Some((1000, "done".into()))),
        ]
    );
}

#[test]
fn our_server_frames_decode_with_tungstenite() {
    let mut wire = Vec::new();
    wire.extend_from_slice(&ws::encode_server_frame(Opcode::Binary, b"abc"));
    wire.extend_from_slice(&ws::encode_server_frame(Opcode::Binary, &vec![9u8; 70_000]));
    wire.extend_from_slice(&ws::encode_server_frame(Opcode::Text, "ok".as_bytes()));
    wire.extend_from_slice(&ws::encode_server_frame(Opcode::Ping, b"p"));
    wire.extend_from_slice(&ws::encode_server_frame(
        Opcode::Close,
        &ws::close_payload(1001, "bye"),
    ));
    let pipe = Pipe {
        input: Cursor::new(wire),
        output: Vec::new(),
    };
    let mut client = WebSocket::from_raw_socket(pipe, TRole::Client, None);
    let mut got = Vec::new();
    loop {
        match client.read() {
            Ok(m) => got.push(m),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("tungstenite refused our frames: {e}"),
        }
    }
    assert_eq!(got[0], Message::Binary(b"abc".to_vec()));
    assert_eq!(got[1], Message::Binary(vec![9u8; 70_000]));
    assert_eq!(got[2], Message::Text("ok".into()));
    assert_eq!(got[3], Message::Ping(b"p".to_vec()));
    assert!(
        matches!(&got[4], Message::Close(Some(c)) if u16::from(c.code) == 1001 && c.reason == "bye")
    );
}

#[test]
fn tungstenite_handshake_against_ours() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::handshake::client::ClientHandshake;
    use tungstenite::handshake::HandshakeError;
    // tungstenite writes its request; we parse it and answer; it accepts our answer.
    let req = "ws://127.0.0.1:7070/v1/ws".into_client_request().unwrap();
    let pipe = Pipe {
        input: Cursor::new(Vec::new()),
        output: Vec::new(),
    };
    let mid = match ClientHandshake::start(pipe, req, None).unwrap().handshake() {
        Err(HandshakeError::Interrupted(mid)) => mid,
        other => panic!(
            "expected to wait for the response, got {:?}",
            other.map(|_| ())
        ),
    };
    let mut mid = mid;
    let request = std::mem::take(&mut mid.get_mut().get_mut().output);
    let (up, used) = ws::parse_upgrade(&request, 16 * 1024).unwrap().unwrap();
    assert_eq!(used, request.len());
    assert_eq!(up.path, "/v1/ws");
    let response = ws::accept_response(&up.key, None);
    mid.get_mut().get_mut().input = Cursor::new(response.into_bytes());
    let (_socket, resp) = mid.handshake().expect("tungstenite accepts our 101");
    assert_eq!(resp.status(), 101);
}
