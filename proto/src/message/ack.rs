//! The publish acknowledgement without a builder.
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
use super::server::ServerMsg;

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
