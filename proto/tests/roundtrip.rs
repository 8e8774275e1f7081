//! quickcheck round trips for every message type and codec, including delivery of the
//! encoded bytes in arbitrary chunks.

use bytes::{Bytes, BytesMut};
use fanfare_proto::message::{
    DecodeLimits, ErrorCode, ItemMsg, LinkItem, MemberMsg, PresenceAction, PresenceEventMsg,
    PresenceOpts, PresenceStateMsg, Start,
};
use fanfare_proto::ws::{self, Message, Opcode, Role};
use fanfare_proto::{framing, ClientMsg, LinkMsg, Name, ServerMsg};
use quickcheck::{quickcheck, Arbitrary, Gen};

fn name(g: &mut Gen) -> Name {
    const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    let len = 1 + usize::arbitrary(g) % 64;
    let s: String = (0..len).map(|_| *g.choose(CH).unwrap() as char).collect();
    Name::try_from(s).unwrap()
}
fn text(g: &mut Gen) -> String {
    // At most 100 bytes: under every text limit the decoder applies.
    let mut out = String::new();
    for c in String::arbitrary(g).chars() {
        if out.len() + c.len_utf8() > 100 {
            break;
        }
        out.push(c);
    }
    out
}
fn opt_text(g: &mut Gen) -> Option<String> {
    bool::arbitrary(g).then(|| text(g))
}
fn payload(g: &mut Gen) -> Bytes {
    Bytes::from(Vec::<u8>::arbitrary(g))
}
fn start(g: &mut Gen) -> Start {
    match u8::arbitrary(g) % 3 {
        0 => Start::Latest,
        1 => Start::At {
            epoch: u64::arbitrary(g),
            seq: u64::arbitrary(g),
        },
        _ => Start::LastN(u32::arbitrary(g)),
    }
}
fn code(g: &mut Gen) -> ErrorCode {
    ErrorCode::from_u16(u16::arbitrary(g) % 17)
}
fn member(g: &mut Gen) -> MemberMsg {
    MemberMsg {
        member_id: u64::arbitrary(g).max(1),
        client_id: text(g),
        info: payload(g),
    }
}
fn members(g: &mut Gen) -> Vec<MemberMsg> {
    (0..usize::arbitrary(g) % 20).map(|_| member(g)).collect()
}
fn event(g: &mut Gen) -> PresenceEventMsg {
    let action = *g
        .choose(&[
            PresenceAction::Join,
            PresenceAction::Leave,
            PresenceAction::Occupancy,
            PresenceAction::Refused,
            PresenceAction::Overflow,
        ])
        .unwrap();
    let needs_member = matches!(
        action,
        PresenceAction::Join | PresenceAction::Leave | PresenceAction::Refused
    );
    PresenceEventMsg {
        action,
        member: (needs_member || bool::arbitrary(g)).then(|| member(g)),
        occupancy: u64::arbitrary(g),
        skipped: u64::arbitrary(g),
    }
}
fn state(g: &mut Gen) -> PresenceStateMsg {
    PresenceStateMsg {
        occupancy: u64::arbitrary(g),
        members_total: u64::arbitrary(g),
        members: members(g),
        next_after: u64::arbitrary(g),
    }
}
fn item(g: &mut Gen) -> ItemMsg {
    ItemMsg {
        subscription_id: u64::arbitrary(g),
        epoch: u64::arbitrary(g),
        seq: u64::arbitrary(g),
        payload: payload(g),
        publisher_id: opt_text(g),
    }
}

#[derive(Clone, Debug)]
struct C(ClientMsg);
impl Arbitrary for C {
    fn arbitrary(g: &mut Gen) -> Self {
        C(match u8::arbitrary(g) % 7 {
            0 => ClientMsg::Hello {
                version_min: u16::arbitrary(g),
                version_max: u16::arbitrary(g),
                token: opt_text(g),
            },
            1 => ClientMsg::Publish {
                request_id: u64::arbitrary(g),
                namespace: name(g),
                topic: name(g),
                payload: payload(g),
                idempotency_key: opt_text(g),
            },
            2 => ClientMsg::Subscribe {
                request_id: u64::arbitrary(g),
                namespace: name(g),
                topic: name(g),
                from: start(g),
                presence: bool::arbitrary(g).then(|| PresenceOpts {
                    enter: bool::arbitrary(g),
                    info: payload(g),
                    client_id: opt_text(g),
                    member_events: bool::arbitrary(g),
                    occupancy_events: bool::arbitrary(g),
                }),
            },
            5 => ClientMsg::PresenceQuery {
                request_id: u64::arbitrary(g),
                namespace: name(g),
                topic: name(g),
                members: bool::arbitrary(g),
                after: u64::arbitrary(g),
                limit: u32::arbitrary(g) % 1001,
            },
            3 => ClientMsg::Unsubscribe {
                request_id: u64::arbitrary(g),
                subscription_id: u64::arbitrary(g),
            },
            4 => ClientMsg::Ping {
                nonce: u64::arbitrary(g),
            },
            6 => ClientMsg::RefreshToken {
                request_id: u64::arbitrary(g),
                token: text(g),
            },
            _ => unreachable!(),
        })
    }
}

#[derive(Clone, Debug)]
struct S(ServerMsg);
impl Arbitrary for S {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = |g: &mut Gen| u64::arbitrary(g);
        S(match u8::arbitrary(g) % 14 {
            0 => ServerMsg::Welcome {
                version: u16::arbitrary(g),
                heartbeat_interval_ms: u32::arbitrary(g),
                max_message_bytes: u32::arbitrary(g),
            },
            1 => ServerMsg::PublishAck {
                request_id: n(g),
                epoch: n(g),
                seq: n(g),

                durability: fanfare_proto::Durability::from_u8(u8::arbitrary(g) % 3),
            },
            2 => ServerMsg::Subscribed {
                request_id: n(g),
                subscription_id: n(g),
                epoch: n(g),
                next_seq: n(g),
                member_id: n(g),
            },
            3 => ServerMsg::Unsubscribed {
                request_id: n(g),
                subscription_id: n(g),
            },
            4 => ServerMsg::Item(item(g)),
            5 => ServerMsg::ItemBatch((0..usize::arbitrary(g) % 20).map(|_| item(g)).collect()),
            6 => ServerMsg::Discontinuity {
                subscription_id: n(g),
                last_seq: n(g),
                new_seq: n(g),
                new_epoch: n(g),
            },
            7 => ServerMsg::Heartbeat {
                subscription_id: n(g),
                epoch: n(g),
                next_seq: n(g),
            },
            8 => ServerMsg::Error {
                request_id: n(g),
                code: code(g),
                text: text(g),
            },
            9 => ServerMsg::Pong { nonce: n(g) },
            10 => ServerMsg::TokenRefreshed {
                request_id: n(g),
                expires_at: n(g),
            },
            12 => ServerMsg::PresenceEvent {
                subscription_id: n(g),
                event: event(g),
            },
            13 => ServerMsg::PresenceState {
                request_id: n(g),
                state: state(g),
            },
            _ => ServerMsg::SubscriptionClosed {
                subscription_id: n(g),
                code: code(g),
                text: text(g),
            },
        })
    }
}

#[derive(Clone, Debug)]
struct L(LinkMsg);
impl Arbitrary for L {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = |g: &mut Gen| u64::arbitrary(g);
        L(match u8::arbitrary(g) % 12 {
            0 => LinkMsg::Hello {
                version: u16::arbitrary(g),
                node_id: text(g),
                shard: u16::arbitrary(g),
            },
            1 => LinkMsg::Publish {
                request_id: n(g),
                namespace: name(g),
                topic: name(g),
                payload: payload(g),
                publisher_id: opt_text(g),
                idempotency_key: opt_text(g),
            },
            2 => LinkMsg::PublishAck {
                request_id: n(g),
                epoch: n(g),
                seq: n(g),

                durability: fanfare_proto::Durability::from_u8(u8::arbitrary(g) % 3),
            },
            3 => LinkMsg::Interest {
                request_id: n(g),
                namespace: name(g),
                topic: name(g),
                subscribe: bool::arbitrary(g),
                from: start(g),
            },
            4 => LinkMsg::Subscribed {
                request_id: n(g),
                epoch: n(g),
                next_seq: n(g),
            },
            5 => LinkMsg::ItemBatch {
                request_id: n(g),
                namespace: name(g),
                topic: name(g),
                epoch: n(g),
                items: (0..usize::arbitrary(g) % 20)
                    .map(|_| LinkItem {
                        seq: n(g),
                        payload: payload(g),
                        publisher_id: opt_text(g),
                    })
                    .collect(),
            },
            6 => LinkMsg::Discontinuity {
                request_id: n(g),
                namespace: name(g),
                topic: name(g),
                last_seq: n(g),
                new_seq: n(g),
                new_epoch: n(g),
            },
            8 => LinkMsg::Presence {
                namespace: name(g),
                topic: name(g),
                reset: false,
                count: i64::arbitrary(g),
                joins: members(g),
                leaves: Vec::<u64>::arbitrary(g).into_iter().take(50).collect(),
            },
            9 => LinkMsg::PresenceEvent {
                namespace: name(g),
                topic: name(g),
                event: event(g),
            },
            10 => LinkMsg::PresenceQuery {
                request_id: n(g),
                namespace: name(g),
                topic: name(g),
                members: bool::arbitrary(g),
                after: n(g),
                limit: u32::arbitrary(g) % 1001,
            },
            11 => LinkMsg::PresenceState {
                request_id: n(g),
                state: state(g),
            },
            _ => LinkMsg::Error {
                request_id: n(g),
                code: code(g),
                text: text(g),
            },
        })
    }
}

/// The client or server message whose table a link message's body is (`LinkPublishAck` is
/// `PublishAck`, `LinkError` is `Error`, `LinkPresenceQuery` is `PresenceQuery`,
/// `LinkPresenceState` is `PresenceState`), encoded; `None` for link-only tables.
fn shared_counterpart(m: &LinkMsg) -> Option<Vec<u8>> {
    Some(match m.clone() {
        LinkMsg::PublishAck {
            request_id,
            epoch,
            seq,
            durability,
        } => ServerMsg::PublishAck {
            request_id,
            epoch,
            seq,
            durability,
        }
        .encode_to_vec(),
        LinkMsg::Error {
            request_id,
            code,
            text,
        } => ServerMsg::Error {
            request_id,
            code,
            text,
        }
        .encode_to_vec(),
        LinkMsg::PresenceQuery {
            request_id,
            namespace,
            topic,
            members,
            after,
            limit,
        } => ClientMsg::PresenceQuery {
            request_id,
            namespace,
            topic,
            members,
            after,
            limit,
        }
        .encode_to_vec(),
        LinkMsg::PresenceState { request_id, state } => {
            ServerMsg::PresenceState { request_id, state }.encode_to_vec()
        }
        _ => return None,
    })
}

/// A link message whose body is a client or server table.
#[derive(Clone, Debug)]
struct Shared(LinkMsg);
impl Arbitrary for Shared {
    fn arbitrary(g: &mut Gen) -> Self {
        loop {
            let L(m) = L::arbitrary(g);
            if shared_counterpart(&m).is_some() {
                return Shared(m);
            }
        }
    }
}

fn lim() -> DecodeLimits {
    DecodeLimits::default()
}

quickcheck! {
    fn client_messages_round_trip(m: C) -> bool {
        let bytes = Bytes::from(m.0.encode_to_vec());
        ClientMsg::decode(&bytes, &lim()) == Ok(m.0)
    }

    fn server_messages_round_trip(m: S) -> bool {
        let bytes = Bytes::from(m.0.encode_to_vec());
        ServerMsg::decode(&bytes, &lim()) == Ok(m.0)
    }

    fn link_messages_round_trip(m: L) -> bool {
        let bytes = Bytes::from(m.0.encode_to_vec());
        LinkMsg::decode(&bytes, &lim()) == Ok(m.0)
    }

    /// A link message with a shared body is the client or server message with the same values
    /// but for the one byte that names the union member: the body table's bytes are the same.
    fn link_bodies_are_the_client_and_server_tables(m: Shared) -> bool {
        let link = m.0.encode_to_vec();
        let Some(other) = shared_counterpart(&m.0) else {
            return false;
        };
        link.len() == other.len() && link.iter().zip(&other).filter(|(a, b)| a != b).count() == 1
    }

    /// A message cut short is refused, or (when only trailing bytes no field points into were
    /// cut) decodes to the very message it was: never to another message, never a panic.
    fn truncated_messages_are_refused_never_misread(m: C, cut: usize) -> bool {
        let v = m.0.encode_to_vec();
        let cut = cut % (v.len() + 1);
        match ClientMsg::decode(&Bytes::copy_from_slice(&v[..cut]), &lim()) {
            Ok(got) => got == m.0,
            Err(_) => cut < v.len(),
        }
    }

    /// Client frames (masked) in any chunking decode to the same messages.
    fn ws_client_frames_in_any_chunks(msgs: Vec<(bool, Vec<u8>)>, frag: u8, chunk: u8) -> bool {
        let mut wire = BytesMut::new();
        let mut want = Vec::new();
        let pieces = usize::from(frag % 4) + 1;
        for (i, (text, body)) in msgs.iter().enumerate() {
            let (op, body) = if *text {
                (Opcode::Text, String::from_utf8_lossy(body).into_owned().into_bytes())
            } else {
                (Opcode::Binary, body.clone())
            };
            let mask = [i as u8, 1, 2, 3];
            // Split each message into `pieces` fragments, with a ping in the middle.
            let step = body.len().div_ceil(pieces).max(1);
            let chunks: Vec<&[u8]> = if body.is_empty() { vec![&body[..]] } else { body.chunks(step).collect() };
            for (j, c) in chunks.iter().enumerate() {
                let opcode = if j == 0 { op } else { Opcode::Continuation };
                ws::encode_frame(&mut wire, opcode, j + 1 == chunks.len(), c, Some(mask));
                if j == 0 && chunks.len() > 1 {
                    ws::encode_frame(&mut wire, Opcode::Ping, true, b"hb", Some(mask));
                    want.push(Message::Ping(Bytes::from_static(b"hb")));
                }
            }
            want.push(if *text { Message::Text(Bytes::from(body)) } else { Message::Binary(Bytes::from(body)) });
        }
        let mut d = ws::Decoder::new(Role::Server, ws::Limits::default());
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for c in wire.chunks(usize::from(chunk) + 1) {
            buf.extend_from_slice(c);
            while let Some(m) = d.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        got == want && buf.is_empty()
    }

    /// Server frames (unmasked) decode on the client side from any split point.
    fn ws_server_frame_split_anywhere(body: Vec<u8>, cut: usize) -> bool {
        let f = ws::encode_server_frame(Opcode::Binary, &body);
        let cut = cut % (f.len() + 1);
        let mut d = ws::Decoder::new(Role::Client, ws::Limits { frame_bytes_max: usize::MAX >> 1, message_bytes_max: usize::MAX >> 1 });
        let mut buf = BytesMut::from(&f[..cut]);
        let first = d.decode(&mut buf).unwrap();
        buf.extend_from_slice(&f[cut..]);
        let m = match first { Some(m) => m, None => d.decode(&mut buf).unwrap().unwrap() };
        m == Message::Binary(Bytes::from(body)) && buf.is_empty()
    }

    /// A server message inside a WebSocket frame inside length-prefixed framing: every layer
    /// round-trips at every byte boundary.
    fn layered_split_at_every_boundary(m: S) -> bool {
        let body = m.0.encode_to_vec();
        let wire = framing::encode_to_bytes(&body);
        let dec = framing::Decoder::new(1 << 24);
        (0..=wire.len()).all(|cut| {
            let mut buf = BytesMut::from(&wire[..cut]);
            let early = dec.decode(&mut buf).unwrap();
            if cut < wire.len() && early.is_some() { return false; }
            buf.extend_from_slice(&wire[cut..]);
            let frame = early.or_else(|| dec.decode(&mut buf).unwrap()).unwrap();
            ServerMsg::decode(&frame, &lim()).as_ref() == Ok(&m.0)
        })
    }
}

#[test]
fn limits_are_enforced() {
    let small = DecodeLimits {
        payload_bytes_max: 4,
        name_bytes_max: 3,
        batch_items_max: 2,
    };
    // Built with the generated code directly: a `ClientMsg` cannot hold an invalid name.
    let publish = |ns: &str, payload: &'static [u8]| {
        use fanfare_proto::generated::fanfare::wire as fb;
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let namespace = Some(fbb.create_string(ns));
        let topic = Some(fbb.create_string("t"));
        let payload = Some(fbb.create_vector(payload));
        let body = fb::Publish::create(
            &mut fbb,
            &fb::PublishArgs {
                request_id: 1,
                namespace,
                topic,
                payload,
                idempotency_key: None,
            },
        );
        let root = fb::ClientMessage::create(
            &mut fbb,
            &fb::ClientMessageArgs {
                body_type: fb::ClientBody::Publish,
                body: Some(body.as_union_value()),
            },
        );
        fbb.finish_minimal(root);
        Bytes::copy_from_slice(fbb.finished_data())
    };
    let e = ClientMsg::decode(&publish("abcd", b"x"), &small).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidName);
    let e = ClientMsg::decode(&publish("ab", b"xxxxx"), &small).unwrap_err();
    assert_eq!(e.code(), ErrorCode::MessageTooLarge);
    assert!(ClientMsg::decode(&publish("a/b", b"x"), &DecodeLimits::default()).is_err());
    let batch = ServerMsg::ItemBatch(vec![
        ItemMsg {
            subscription_id: 1,
            epoch: 1,
            seq: 1,
            payload: Bytes::new(),
            publisher_id: None
        };
        3
    ]);
    assert!(ServerMsg::decode(&Bytes::from(batch.encode_to_vec()), &small).is_err());
}

#[test]
fn presence_query_limit_is_capped_on_links_and_refused_from_clients() {
    let ns = Name::try_from("n").unwrap();
    let topic = Name::try_from("t").unwrap();
    let link = LinkMsg::PresenceQuery {
        request_id: 1,
        namespace: ns.clone(),
        topic: topic.clone(),
        members: true,
        after: 0,
        limit: 5000,
    };
    match LinkMsg::decode(&Bytes::from(link.encode_to_vec()), &lim()) {
        Ok(LinkMsg::PresenceQuery { limit, .. }) => {
            assert_eq!(limit as usize, fanfare_proto::message::PRESENCE_PAGE_MAX)
        }
        other => panic!("{other:?}"),
    }
    let client = ClientMsg::PresenceQuery {
        request_id: 1,
        namespace: ns,
        topic,
        members: true,
        after: 0,
        limit: 5000,
    };
    let e = ClientMsg::decode(&Bytes::from(client.encode_to_vec()), &lim()).unwrap_err();
    assert!(matches!(
        e,
        fanfare_proto::DecodeError::TooLarge { field: "limit", .. }
    ));
}

#[test]
fn garbage_and_wrong_root_are_rejected() {
    for junk in [&b""[..], b"\0", b"\xff\xff\xff\xff", b"\x08\0\0\0\0\0\0\0"] {
        assert!(ClientMsg::decode(&Bytes::copy_from_slice(junk), &lim()).is_err());
    }
}

#[test]
fn unknown_union_member_is_rejected() {
    // Encode a Ping, then bump the union type byte past the last known member.
    let v = ClientMsg::Ping { nonce: 5 }.encode_to_vec();
    let mut found = false;
    for i in 0..v.len() {
        if v[i] == 5 {
            // ClientBody::Ping is 5; try replacing it and see if decode yields UnknownType.
            let mut w = v.clone();
            w[i] = 42;
            if let Err(fanfare_proto::DecodeError::UnknownType(42)) =
                ClientMsg::decode(&Bytes::from(w), &lim())
            {
                found = true;
            }
        }
    }
    assert!(found, "no byte of the encoding held the union type");
}
