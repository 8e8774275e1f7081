//! Writes a small seed corpus for the fuzz targets: `cargo run -p fanfare-proto --example
//! fuzz_seeds -- fuzz/corpus`. The output is committed; rerun it when the schema changes.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use fanfare_proto::message::{ErrorCode, ItemMsg, LinkItem, Start};
use fanfare_proto::ws::{self, Opcode};
use fanfare_proto::{sse, ClientMsg, LinkMsg, ServerMsg};

fn write(dir: &Path, target: &str, seeds: Vec<Vec<u8>>) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    for (i, s) in seeds.into_iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i}")), s)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let dir = Path::new(&dir);
    let client = [
        ClientMsg::Hello {
            version_min: 1,
            version_max: 1,
            token: Some("t".into()),
        },
        ClientMsg::Publish {
            request_id: 1,
            namespace: "chat".try_into().unwrap(),
            topic: "room-1".try_into().unwrap(),
            payload: Bytes::from_static(b"hello"),
            idempotency_key: Some("k".into()),
        },
        ClientMsg::Subscribe {
            request_id: 2,
            namespace: "chat".try_into().unwrap(),
            topic: "room-1".try_into().unwrap(),
            from: Start::At { epoch: 5, seq: 9 },
        },
        ClientMsg::Subscribe {
            request_id: 3,
            namespace: "a".try_into().unwrap(),
            topic: "b".try_into().unwrap(),
            from: Start::LastN(10),
        },
        ClientMsg::Unsubscribe {
            request_id: 4,
            subscription_id: 7,
        },
        ClientMsg::Ping { nonce: 8 },
        ClientMsg::RefreshToken {
            request_id: 9,
            token: "x.y.z".into(),
        },
    ];
    write(
        dir,
        "client_msg",
        client.iter().map(|m| m.encode_to_vec()).collect(),
    )?;
    let item = ItemMsg {
        subscription_id: 1,
        epoch: 2,
        seq: 3,
        payload: Bytes::from_static(b"p"),
        publisher_id: Some("me".into()),
    };
    let mut link: Vec<Vec<u8>> = [
        LinkMsg::Hello {
            version: 1,
            node_id: "n1".into(),
            shard: 0,
        },
        LinkMsg::Interest {
            request_id: 1,
            namespace: "a".try_into().unwrap(),
            topic: "b".try_into().unwrap(),
            subscribe: true,
            from: Start::Latest,
        },
        LinkMsg::ItemBatch {
            request_id: 0,
            namespace: "a".try_into().unwrap(),
            topic: "b".try_into().unwrap(),
            epoch: 3,
            items: vec![
                LinkItem {
                    seq: 1,
                    payload: Bytes::from_static(b"x"),
                    publisher_id: None
                };
                3
            ],
        },
        LinkMsg::Error {
            request_id: 1,
            code: ErrorCode::Overloaded,
            text: "busy".into(),
        },
    ]
    .iter()
    .map(|m| m.encode_to_vec())
    .collect();
    link.push(ServerMsg::ItemBatch(vec![item.clone(); 4]).encode_to_vec());
    link.push(ServerMsg::Item(item).encode_to_vec());
    write(dir, "link_msg", link)?;
    let mut frames = Vec::new();
    for (op, fin, payload) in [
        (Opcode::Binary, true, &b"abc"[..]),
        (Opcode::Text, false, b"hel"),
        (Opcode::Ping, true, b"p"),
        (Opcode::Close, true, &[3, 232, b'o', b'k']),
        (Opcode::Binary, true, &[0u8; 300]),
    ] {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0]);
        ws::encode_frame(&mut b, op, fin, payload, Some([1, 2, 3, 4]));
        frames.push(b.to_vec());
    }
    write(dir, "ws_frame", frames)?;
    let (req, _) = ws::client_request(
        "localhost:7070",
        "/v1/ws?token=abc",
        [1; 16],
        &[("Origin", "https://a.example")],
    );
    write(
        dir,
        "ws_upgrade",
        vec![
            req.into_bytes(),
            ws::accept_response("dGhlIHNhbXBsZSBub25jZQ==", None).into_bytes(),
        ],
    )?;
    write(
        dir,
        "sse_event_id",
        vec![
            b"12-34".to_vec(),
            sse::item_to_bytes(1, 2, b"a\nb").to_vec(),
        ],
    )?;
    Ok(())
}
