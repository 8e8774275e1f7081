//! The two messages sent once per publish, encoded without a builder: the publish
//! acknowledgement and the fan-out item. Both are valid flatbuffers any reader and the
//! verifier accept, and tests decode each against the builder's encoding of the same values.
//!
//! A `PublishAck` is four scalars, so with every field written (`force_defaults`) its bytes
//! have one layout whatever the values. The layout is built once, with the flatbuffers builder
//! itself, and each acknowledgement is that template with the four values written in: a
//! copy and four stores instead of a builder run (vtable search included) per publish. The
//! template is found, not assumed: each field's place is where the bytes change when only
//! that field changes, and if that is not one run of the field's width (a builder that laid
//! it out otherwise), there is no template and callers use the builder.

use std::sync::OnceLock;

use flatbuffers::FlatBufferBuilder;

use super::common::Durability;
use super::server::{ItemRef, ServerMsg};
use crate::generated::fanfare::wire as fb;

/// The bytes of a `ServerMessage { PublishAck }` with every field present, and where each
/// field is.
struct Layout {
    bytes: Vec<u8>,
    request_id: usize,
    epoch: usize,
    seq: usize,
    durability: usize,
}

fn build(request_id: u64, epoch: u64, seq: u64, durability: Durability) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    fbb.force_defaults(true);
    ServerMsg::PublishAck {
        request_id,
        epoch,
        seq,
        durability,
    }
    .encode_into(&mut fbb);
    fbb.finished_data().to_vec()
}

/// Where `a` and `b` differ, if that is exactly one run of `width` bytes.
fn field_at(a: &[u8], b: &[u8], width: usize) -> Option<usize> {
    if a.len() != b.len() {
        return None;
    }
    let first = a.iter().zip(b).position(|(x, y)| x != y)?;
    let last = a.iter().zip(b).rposition(|(x, y)| x != y)?;
    (last + 1 - first == width).then_some(first)
}

fn layout() -> Option<&'static Layout> {
    static LAYOUT: OnceLock<Option<Layout>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let base = build(0, 0, 0, Durability::Memory);
            let at = |other: Vec<u8>, width| field_at(&base, &other, width);
            Some(Layout {
                request_id: at(build(u64::MAX, 0, 0, Durability::Memory), 8)?,
                epoch: at(build(0, u64::MAX, 0, Durability::Memory), 8)?,
                seq: at(build(0, 0, u64::MAX, Durability::Memory), 8)?,
                durability: at(build(0, 0, 0, Durability::Synced), 1)?,
                bytes: base,
            })
        })
        .as_ref()
}

/// The length of [`write_publish_ack`]'s bytes, or `None` when there is no template (encode
/// with [`ServerMsg::encode_into`] then).
pub fn publish_ack_len() -> Option<usize> {
    layout().map(|l| l.bytes.len())
}

/// Appends the `ServerMessage { PublishAck }` of these values to `out` (the same message
/// [`ServerMsg::encode_into`] makes, with every field present); `false` (nothing appended)
/// when there is no template.
pub fn write_publish_ack(
    out: &mut Vec<u8>,
    request_id: u64,
    epoch: u64,
    seq: u64,
    durability: Durability,
) -> bool {
    let Some(l) = layout() else {
        return false;
    };
    let start = out.len();
    out.extend_from_slice(&l.bytes);
    let b = &mut out[start..];
    b[l.request_id..l.request_id + 8].copy_from_slice(&request_id.to_le_bytes());
    b[l.epoch..l.epoch + 8].copy_from_slice(&epoch.to_le_bytes());
    b[l.seq..l.seq + 8].copy_from_slice(&seq.to_le_bytes());
    b[l.durability] = durability.wire().0;
    true
}

/// Where an item's fixed part ends and its payload vector starts (see [`write_item`]).
const ITEM_FIXED: usize = 80;

/// The length of [`write_item`]'s bytes for `it`.
pub fn item_len(it: &ItemRef<'_>) -> usize {
    let payload_end = ITEM_FIXED + 4 + it.payload.len();
    match it.publisher_id {
        Some(p) => payload_end.next_multiple_of(4) + 4 + p.len() + 1,
        None => payload_end,
    }
}

fn put_u16s(out: &mut Vec<u8>, v: &[u16]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Appends the `ServerMessage { Item }` of `it` to `out`: [`item_len`] bytes, laid out front to
/// back (positions from the message's first byte; every scalar at a multiple of its size):
///
/// | at | what |
/// |---|---|
/// | 0 | root offset (12) |
/// | 4 | `ServerMessage`'s vtable: 8 bytes, table 12 bytes, `body_type` at +8, `body` at +4 |
/// | 12 | `ServerMessage`: soffset 8, `body` offset (to 44), `body_type` `Item`, 3 bytes pad |
/// | 24 | `Item`'s vtable: 14 bytes, table 36 bytes, fields at +4, +12, +20, +28, +32 (0: absent) |
/// | 38 | 6 bytes pad |
/// | 44 | `Item`: soffset 20, `subscription_id`, `epoch`, `seq` (at 48, 56, 64), `payload` and `publisher_id` offsets (72, 76) |
/// | 80 | the payload: length, bytes |
/// | then | pad to 4; the publisher id: length, bytes, NUL |
pub fn write_item(out: &mut Vec<u8>, it: &ItemRef<'_>) {
    let base = out.len();
    out.reserve(item_len(it));
    out.extend_from_slice(&12u32.to_le_bytes());
    put_u16s(out, &[8, 12, 8, 4]);
    out.extend_from_slice(&8i32.to_le_bytes());
    out.extend_from_slice(&(44u32 - 16).to_le_bytes());
    out.extend_from_slice(&[fb::ServerBody::Item.0, 0, 0, 0]);
    let publisher_field = if it.publisher_id.is_some() { 32 } else { 0 };
    put_u16s(out, &[14, 36, 4, 12, 20, 28, publisher_field]);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&20i32.to_le_bytes());
    for v in [it.subscription_id, it.epoch, it.seq] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(ITEM_FIXED as u32 - 72).to_le_bytes());
    let payload_end = ITEM_FIXED + 4 + it.payload.len();
    let publisher_at = payload_end.next_multiple_of(4);
    let publisher_offset = if it.publisher_id.is_some() {
        // A payload is at most a message (far below 4 GiB: the frame and message limits).
        u32::try_from(publisher_at - 76).unwrap_or(0)
    } else {
        0
    };
    out.extend_from_slice(&publisher_offset.to_le_bytes());
    debug_assert_eq!(out.len() - base, ITEM_FIXED);
    out.extend_from_slice(&(it.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(it.payload);
    if let Some(p) = it.publisher_id {
        out.resize(base + publisher_at, 0);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p.as_bytes());
        out.push(0);
    }
    debug_assert_eq!(out.len() - base, item_len(it));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::DecodeLimits;
    use bytes::Bytes;
    use quickcheck::quickcheck;

    #[test]
    fn the_template_is_found() {
        assert!(publish_ack_len().is_some());
    }

    quickcheck! {
        fn a_direct_item_decodes_as_the_builders(sub: u64, e: u64, s: u64, payload: Vec<u8>, publisher: Option<String>) -> bool {
            let it = ItemRef { subscription_id: sub, epoch: e, seq: s, payload: &payload, publisher_id: publisher.as_deref() };
            let mut out = vec![1u8, 2, 3];
            write_item(&mut out, &it);
            assert_eq!(out.len(), 3 + item_len(&it));
            let mut fbb = FlatBufferBuilder::new();
            crate::message::encode_item(&mut fbb, it);
            let lim = DecodeLimits { payload_bytes_max: usize::MAX, ..DecodeLimits::default() };
            let direct = ServerMsg::decode(&Bytes::copy_from_slice(&out[3..]), &lim);
            let built = ServerMsg::decode(&Bytes::copy_from_slice(fbb.finished_data()), &lim);
            assert!(direct.is_ok(), "{direct:?}");
            direct == built
        }

        fn a_templated_ack_decodes_to_its_values(r: u64, e: u64, s: u64, d: u8) -> bool {
            let durability = Durability::from_u8(d % 3);
            let mut out = vec![7u8];
            assert!(write_publish_ack(&mut out, r, e, s, durability));
            assert_eq!(out.len(), 1 + publish_ack_len().unwrap());
            let msg = ServerMsg::decode(&Bytes::copy_from_slice(&out[1..]), &DecodeLimits::default());
            msg == Ok(ServerMsg::PublishAck { request_id: r, epoch: e, seq: s, durability })
        }
    }
}
