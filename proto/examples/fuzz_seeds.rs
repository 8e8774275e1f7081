//! Writes a small seed corpus for the fuzz targets: `cargo run -p fanfare-proto --example
//! fuzz_seeds -- fuzz/corpus`. The output is committed; rerun it when the schema changes.
//! (The `unwrap`s below are on literal names that pass the name rules: no input reaches them.)

use std::path::Path;

use bytes::{Bytes, BytesMut};
use fanfare_proto::message::{
    ErrorCode, ItemMsg, LinkItem, MemberMsg, PresenceAction, PresenceEventMsg, PresenceStateMsg,
    Start,
};
use fanfare_proto::ws::{self, Opcode};
use fanfare_proto::{framing, sse, ClientMsg, LinkMsg, ServerMsg};

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
            presence: Some(fanfare_proto::PresenceOpts {
                enter: true,
                info: Bytes::from_static(b"{\"name\":\"ada\"}"),
                client_id: Some("ada".into()),
                member_events: true,
                occupancy_events: true,
            }),
        },
        ClientMsg::PresenceQuery {
            request_id: 7,
            namespace: "chat".try_into().unwrap(),
            topic: "room-1".try_into().unwrap(),
            members: true,
            after: 12,
            limit: 50,
        },
        ClientMsg::Subscribe {
            request_id: 3,
            namespace: "a".try_into().unwrap(),
            topic: "b".try_into().unwrap(),
            from: Start::LastN(10),
            presence: None,
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
    let member = MemberMsg {
        member_id: 77,
        client_id: "ada".into(),
        info: Bytes::from_static(b"i"),
    };
    let link: Vec<Vec<u8>> = [
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
        LinkMsg::Presence {
            namespace: "a".try_into().unwrap(),
            topic: "b".try_into().unwrap(),
            reset: true,
            count: 3,
            joins: vec![member.clone()],
            leaves: vec![5, 6],
        },
        LinkMsg::PresenceEvent {
            namespace: "a".try_into().unwrap(),
            topic: "b".try_into().unwrap(),
            event: PresenceEventMsg {
                action: PresenceAction::Leave,
                member: Some(member.clone()),
                occupancy: 1,
                skipped: 0,
            },
        },
    ]
    .iter()
    .map(|m| m.encode_to_vec())
    .collect();
    write(dir, "link_msg", link.clone())?;
    let server = vec![
        ServerMsg::ItemBatch(vec![item.clone(); 4]).encode_to_vec(),
        ServerMsg::Item(item).encode_to_vec(),
        ServerMsg::Subscribed {
            request_id: 1,
            subscription_id: 2,
            epoch: 3,
            next_seq: 4,
            member_id: 9,
        }
        .encode_to_vec(),
        ServerMsg::PresenceEvent {
            subscription_id: 2,
            event: PresenceEventMsg {
                action: PresenceAction::Join,
                member: Some(member.clone()),
                occupancy: 3,
                skipped: 0,
            },
        }
        .encode_to_vec(),
        ServerMsg::PresenceState {
            request_id: 4,
            state: PresenceStateMsg {
                occupancy: 2,
                members_total: 2,
                members: vec![member.clone(); 2],
                next_after: 0,
            },
        }
        .encode_to_vec(),
        ServerMsg::Error {
            request_id: 1,
            code: ErrorCode::InvalidName,
            text: "bad".into(),
        }
        .encode_to_vec(),
    ];
    write(dir, "server_msg", server)?;
    // Framing: a split size byte, then frames back to back (the last one cut short).
    let mut framed = vec![7u8];
    for m in &link {
        framed.extend_from_slice(&framing::encode_to_bytes(m));
    }
    let cut = framed.len() - 3;
    write(dir, "framing", vec![framed.clone(), framed[..cut].to_vec()])?;
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
        "http_request",
        vec![
            b"GET /v1/topics/chat/room-1?from=last:10&token=a%2Eb HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 5-9\r\n\r\n".to_vec(),
            b"POST /v1/topics/chat/room-1 HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: keep-alive\r\n\r\nhello".to_vec(),
            b"GET /v1/admin/topics?prefix=chat/&limit=5 HTTP/1.0\r\nAuthorization: Bearer x.y.z\r\n\r\n".to_vec(),
        ],
    )?;
    // Tokens: a JWT-shaped string (the signature does not verify), and claims to be signed by
    // the target (first byte 0).
    write(
        dir,
        "token",
        vec![
            b"eyJhbGciOiJIUzI1NiIsImtpZCI6ImZ6IiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo0MTAyNDQ0ODAwfQ.c2ln".to_vec(),
            b"\0{\"sub\":\"alice\",\"exp\":4102444800,\"perms\":[{\"ns\":\"chat\",\"topic\":\"room-*\",\"rights\":[\"publish\",\"subscribe\"]}],\"admin\":true}".to_vec(),
            b"\0{\"sub\":\"\",\"exp\":1}".to_vec(),
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
