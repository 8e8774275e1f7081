//! The link messages' bytes on the wire are pinned. Each case below was encoded by the code
//! before the link union reused the client and server tables (`PublishAck`, `Error`,
//! `PresenceQuery` and `PresenceState` in place of their field-for-field `Link*` copies,
//! issue 30), and must still encode to the very same bytes and decode back to the same
//! message. The variants whose tables did not change are pinned too, so any later change of
//! the link format shows up here.

use bytes::Bytes;
use fanfare_proto::message::{
    DecodeLimits, Durability, ErrorCode, LinkItem, MemberMsg, PresenceAction, PresenceEventMsg,
    PresenceStateMsg, Start,
};
use fanfare_proto::{LinkMsg, Name};

fn name(s: &str) -> Name {
    Name::try_from(s).expect("a valid test name")
}

fn member(id: u64, client_id: &str, info: &'static [u8]) -> MemberMsg {
    MemberMsg {
        member_id: id,
        client_id: client_id.to_owned(),
        info: Bytes::from_static(info),
    }
}

/// Each case's bytes, in hex, as the code before issue 30 encoded them (captured from
/// `LinkMsg::encode_to_vec` with the `Link*` copies of the shared tables still in the schema).
const OLD_HEX: &[(&str, &str)] = &[
    (
        "publish_ack",
        "100000000000000008000c00070008000800000000000003100000000c0020000800100018000700\
         0c00000000000002070000000000000003000000000000002a00000000000000",
    ),
    (
        "publish_ack_defaults",
        "0c00000008000c00070008000800000000000003080000000400040004000000",
    ),
    (
        "publish_ack_max",
        "100000000000000008000c00070008000800000000000003100000000c0020000800100018000700\
         0c00000000000001ffffffffffffffff0100000000000000feffffffffffffff",
    ),
    (
        "error",
        "0c00000008000e000700080008000000000000081000000000000a0014000c00060008000a000000\
         000010000c0000000900000000000000110000006f776e657220756e726561636861626c65000000",
    ),
    (
        "error_empty",
        "0c00000008000e000700080008000000000000081000000000000a0008000000000004000a000000\
         040000000000000000000000",
    ),
    (
        "presence_query",
        "100000000000000008000c0007000800080000000000000b1400000010002400140008000c000700\
         1c00100010000000000000012800000018000000640000000b000000000000000500000000000000\
         050000006c6f626279000000040000006368617400000000",
    ),
    (
        "presence_query_defaults",
        "0c00000008000e0007000800080000000000000b1000000000000a000c000000040008000a000000\
         10000000040000000100000074000000010000006e000000",
    ),
    (
        "presence_state",
        "0c00000008000e0007000800080000000000000c1400000000000e002c0008001000180004002000\
         0e000000280000000c00000000000000030000000000000002000000000000000200000000000000\
         0000000002000000340000000c0000000800100008000400080000000c0000000200000000000000\
         03000000626f620000000a0018000c00040008000a0000001c000000100000000100000000000000\
         00000000020000006869000005000000616c696365000000",
    ),
    (
        "presence_state_empty",
        "0c00000008000c0007000800080000000000000c080000000400040004000000",
    ),
    (
        "hello",
        "0c00000008000e000700080008000000000000011000000000000a000c000400080006000a000000\
         01000100040000000200000073310000",
    ),
    (
        "publish",
        "0c00000008000c0007000800080000000000000214000000100020001800040008000c0010001400\
         10000000480000003800000028000000180000000c0000000400000000000000020000006b310000\
         05000000616c6963650000000500000068656c6c6f000000050000006c6f62627900000004000000\
         6368617400000000",
    ),
    (
        "interest",
        "100000000000000008000c000700080008000000000000041400000010002000140008000c000000\
         07001000100000000000000240000000300000001800000005000000000000000000000008001400\
         04000c000800000002000000000000000a00000000000000050000006c6f62627900000004000000\
         6368617400000000",
    ),
    (
        "subscribed",
        "0c00000008000e000700080008000000000000051000000000000a001c0004000c0014000a000000\
         050000000000000002000000000000000a00000000000000",
    ),
    (
        "item_batch",
        "0c00000008000e000700080008000000000000061400000000000e001c0000000400080010000c00\
         0e000000800000007000000010000000020000000000000000000000020000004000000010000000\
         00000a0014000c00040008000a000000180000000c0000000b0000000000000003000000626f6200\
         02000000626300000800100008000400080000000c0000000a000000000000000100000061000000\
         050000006c6f626279000000040000006368617400000000",
    ),
    (
        "discontinuity",
        "100000000000000008000c000700080008000000000000071400000010002c000c00040008001400\
         1c002400100000003400000024000000050000000000000003000000000000000700000000000000\
         0200000000000000050000006c6f626279000000040000006368617400000000",
    ),
    (
        "presence",
        "0c00000008000c00070008000800000000000009140000001000240008000c000700180010001400\
         10000000000000017400000064000000200000001000000002000000000000000000000001000000\
         0100000000000000010000001000000000000a0018000c00040008000a0000001c00000010000000\
         0300000000000000000000000100000078000000050000006361726f6c000000050000006c6f6262\
         79000000040000006368617400000000",
    ),
    (
        "presence_event",
        "0c00000008000e0007000800080000000000000a1400000000000e001a000400080000000c001000\
         0e000000580000004800000018000000040000000000000000000a0018000c00040008000a000000\
         1c000000100000000300000000000000000000000100000078000000050000006361726f6c000000\
         050000006c6f626279000000040000006368617400000000",
    ),
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn old_hex(label: &str) -> &'static str {
    OLD_HEX
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("no old bytes for {label}"))
}

#[test]
fn link_messages_encode_to_the_old_bytes() {
    let cases = messages();
    assert_eq!(cases.len(), OLD_HEX.len());
    // Encoded alone and into a builder that has encoded something else before.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    for (label, m) in &cases {
        assert_eq!(hex(&m.encode_to_vec()), old_hex(label), "{label}");
        m.encode_into(&mut fbb);
        assert_eq!(
            hex(fbb.finished_data()),
            old_hex(label),
            "{label}, reused builder"
        );
    }
}

#[test]
fn old_bytes_decode_to_the_same_messages() {
    for (label, m) in messages() {
        let bytes = Bytes::from(unhex(old_hex(label)));
        assert_eq!(
            LinkMsg::decode(&bytes, &DecodeLimits::default()),
            Ok(m),
            "{label}"
        );
    }
}

fn messages() -> Vec<(&'static str, LinkMsg)> {
    vec![
        (
            "publish_ack",
            LinkMsg::PublishAck {
                request_id: 7,
                epoch: 3,
                seq: 42,
                durability: Durability::Synced,
            },
        ),
        (
            "publish_ack_defaults",
            LinkMsg::PublishAck {
                request_id: 0,
                epoch: 0,
                seq: 0,
                durability: Durability::Memory,
            },
        ),
        (
            "publish_ack_max",
            LinkMsg::PublishAck {
                request_id: u64::MAX,
                epoch: 1,
                seq: u64::MAX - 1,
                durability: Durability::Written,
            },
        ),
        (
            "error",
            LinkMsg::Error {
                request_id: 9,
                code: ErrorCode::Unavailable,
                text: "owner unreachable".to_owned(),
            },
        ),
        (
            "error_empty",
            LinkMsg::Error {
                request_id: 0,
                code: ErrorCode::Unknown,
                text: String::new(),
            },
        ),
        (
            "presence_query",
            LinkMsg::PresenceQuery {
                request_id: 11,
                namespace: name("chat"),
                topic: name("lobby"),
                members: true,
                after: 5,
                limit: 100,
            },
        ),
        (
            "presence_query_defaults",
            LinkMsg::PresenceQuery {
                request_id: 0,
                namespace: name("n"),
                topic: name("t"),
                members: false,
                after: 0,
                limit: 0,
            },
        ),
        (
            "presence_state",
            LinkMsg::PresenceState {
                request_id: 12,
                state: PresenceStateMsg {
                    occupancy: 3,
                    members_total: 2,
                    members: vec![member(1, "alice", b"hi"), member(2, "bob", b"")],
                    next_after: 2,
                },
            },
        ),
        (
            "presence_state_empty",
            LinkMsg::PresenceState {
                request_id: 0,
                state: PresenceStateMsg::default(),
            },
        ),
        (
            "hello",
            LinkMsg::Hello {
                version: 1,
                node_id: "s1".to_owned(),
                shard: 1,
            },
        ),
        (
            "publish",
            LinkMsg::Publish {
                request_id: 4,
                namespace: name("chat"),
                topic: name("lobby"),
                payload: Bytes::from_static(b"hello"),
                publisher_id: Some("alice".to_owned()),
                idempotency_key: Some("k1".to_owned()),
            },
        ),
        (
            "interest",
            LinkMsg::Interest {
                request_id: 5,
                namespace: name("chat"),
                topic: name("lobby"),
                subscribe: true,
                from: Start::At { epoch: 2, seq: 10 },
            },
        ),
        (
            "subscribed",
            LinkMsg::Subscribed {
                request_id: 5,
                epoch: 2,
                next_seq: 10,
            },
        ),
        (
            "item_batch",
            LinkMsg::ItemBatch {
                request_id: 0,
                namespace: name("chat"),
                topic: name("lobby"),
                epoch: 2,
                items: vec![
                    LinkItem {
                        seq: 10,
                        payload: Bytes::from_static(b"a"),
                        publisher_id: None,
                    },
                    LinkItem {
                        seq: 11,
                        payload: Bytes::from_static(b"bc"),
                        publisher_id: Some("bob".to_owned()),
                    },
                ],
            },
        ),
        (
            "discontinuity",
            LinkMsg::Discontinuity {
                request_id: 5,
                namespace: name("chat"),
                topic: name("lobby"),
                last_seq: 3,
                new_seq: 7,
                new_epoch: 2,
            },
        ),
        (
            "presence",
            LinkMsg::Presence {
                namespace: name("chat"),
                topic: name("lobby"),
                reset: true,
                count: 2,
                joins: vec![member(3, "carol", b"x")],
                leaves: vec![1],
            },
        ),
        (
            "presence_event",
            LinkMsg::PresenceEvent {
                namespace: name("chat"),
                topic: name("lobby"),
                event: PresenceEventMsg {
                    action: PresenceAction::Join,
                    member: Some(member(3, "carol", b"x")),
                    occupancy: 4,
                    skipped: 0,
                },
            },
        ),
    ]
}
