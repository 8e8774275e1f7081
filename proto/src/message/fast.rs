//! The publish, decoded without the generic verifier.
//!
//! Every publish goes through [`ClientMsg::decode`], and for a five-field table the generic
//! flatbuffers verifier costs more than everything else the decoder does (a trace record built
//! and dropped per field, a call per check). This reads a `ClientMessage { Publish }` directly
//! with the verifier's own rules, check for check: offsets in range and aligned, signed vtable
//! offsets, vtables even-sized and in range, strings UTF-8 and NUL-terminated, required fields
//! present, and the same apparent-size budget. Safe code only, every read bounds-checked.
//!
//! It only ever says yes: anything it does not accept (another message, a limit passed, a
//! malformed buffer) returns `None` and the generic decoder runs and gives the precise error.
//! The property that keeps it honest (a quickcheck here and the `client_msg` fuzz target):
//! whatever it accepts, the generic decoder accepts with the same value.

use std::ops::Range;

use bytes::Bytes;

use super::client::ClientMsg;
use super::common::{
    DecodeError, DecodeLimits, IDEMPOTENCY_KEY_BYTES_MAX, VERIFY_TABLES_NONBATCH, VTABLE_BYTES_MAX,
};
use crate::generated::fanfare::wire as fb;
use crate::names::{validate_name, Name};

/// A table as the verifier sees it: its position, its vtable's and the vtable's length.
struct Table {
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

/// Bounds- and alignment-checked little-endian reads, counting the bytes looked at as the
/// verifier does (its defence against overlapping offsets).
struct Reader<'a> {
    b: &'a [u8],
    apparent: usize,
    apparent_max: usize,
}

impl<'a> Reader<'a> {
    fn range(&mut self, pos: usize, size: usize) -> Option<Range<usize>> {
        let end = pos.checked_add(size)?;
        if end > self.b.len() {
            return None;
        }
        self.apparent += size;
        (self.apparent <= self.apparent_max).then_some(pos..end)
    }

    fn bytes<const N: usize>(&mut self, pos: usize) -> Option<[u8; N]> {
        if pos & (N - 1) != 0 {
            return None; // the verifier's alignment rule: a scalar at a multiple of its size (N is 1, 2, 4 or 8)
        }
        let r = self.range(pos, N)?;
        self.b.get(r)?.try_into().ok()
    }

    fn u16(&mut self, pos: usize) -> Option<u16> {
        self.bytes::<2>(pos).map(u16::from_le_bytes)
    }

    fn u32(&mut self, pos: usize) -> Option<u32> {
        self.bytes::<4>(pos).map(u32::from_le_bytes)
    }

    /// The table an offset at `pos` points to.
    fn table_at_offset(&mut self, pos: usize) -> Option<Table> {
        let target = (self.u32(pos)? as usize).saturating_add(pos);
        self.table(target)
    }

    fn table(&mut self, pos: usize) -> Option<Table> {
        let soffset = i32::from_le_bytes(self.bytes::<4>(pos)?);
        // Signed offsets are subtracted.
        let vtable = if soffset > 0 {
            pos.checked_sub(soffset.unsigned_abs() as usize)?
        } else {
            pos.checked_add(soffset.unsigned_abs() as usize)?
        };
        if vtable >= self.b.len() {
            return None;
        }
        let vtable_len = usize::from(self.u16(vtable)?);
        if vtable.checked_add(vtable_len)? % 2 != 0 {
            return None;
        }
        self.range(vtable, vtable_len)?;
        Some(Table {
            pos,
            vtable,
            vtable_len,
        })
    }

    /// Where field `voffset` of `t` is, `Some(None)` when absent.
    fn field(&mut self, t: &Table, voffset: usize) -> Option<Option<usize>> {
        if voffset < t.vtable_len {
            let off = self.u16(t.vtable + voffset)?;
            if off > 0 {
                return Some(Some(t.pos.saturating_add(usize::from(off))));
            }
        }
        Some(None)
    }

    /// The bytes of the `[ubyte]` vector an offset at `pos` points to.
    fn vector(&mut self, pos: usize) -> Option<Range<usize>> {
        let at = (self.u32(pos)? as usize).saturating_add(pos);
        let len = self.u32(at)? as usize;
        self.range(at.saturating_add(4), len)
    }

    /// The text of the string an offset at `pos` points to.
    fn string(&mut self, pos: usize) -> Option<&'a str> {
        let r = self.vector(pos)?;
        if self.b.get(r.end) != Some(&0) {
            return None;
        }
        std::str::from_utf8(self.b.get(r)?).ok()
    }

    /// An optional string field.
    fn opt_string(&mut self, t: &Table, voffset: usize) -> Option<Option<&'a str>> {
        match self.field(t, voffset)? {
            Some(pos) => self.string(pos).map(Some),
            None => Some(None),
        }
    }
}

impl ClientMsg {
    /// Decodes and checks a client message. `buf` must hold exactly one message.
    ///
    /// A publish, the message that comes by the million, is read by [`publish`], which
    /// applies the verifier's rules without its generic machinery; the result is always what
    /// [`ClientMsg::decode_general`] gives.
    pub fn decode(buf: &Bytes, lim: &DecodeLimits) -> Result<Self, DecodeError> {
        if let Some(m) = publish(buf, lim) {
            return Ok(m);
        }
        Self::decode_general(buf, lim)
    }
}

/// `buf` as a `ClientMessage { Publish }` within `lim`, or `None` (decode it the general way).
#[doc(hidden)]
pub fn publish(buf: &Bytes, lim: &DecodeLimits) -> Option<ClientMsg> {
    let mut r = Reader {
        b: buf,
        apparent: 0,
        apparent_max: buf
            .len()
            .saturating_add(VERIFY_TABLES_NONBATCH.saturating_mul(VTABLE_BYTES_MAX)),
    };
    let root = r.table_at_offset(0)?;
    // The union: value first, then type, as the verifier reads them.
    let body = r.field(&root, fb::ClientMessage::VT_BODY as usize)?;
    let ty = r.field(&root, fb::ClientMessage::VT_BODY_TYPE as usize)??;
    if r.range(ty, 1).and_then(|t| r.b.get(t.start)).copied()? != fb::ClientBody::Publish.0 {
        return None;
    }
    let p = r.table_at_offset(body?)?;
    let request_id = match r.field(&p, fb::Publish::VT_REQUEST_ID as usize)? {
        Some(pos) => u64::from_le_bytes(r.bytes::<8>(pos)?),
        None => 0,
    };
    let namespace = r.opt_string(&p, fb::Publish::VT_NAMESPACE as usize)??;
    let topic = r.opt_string(&p, fb::Publish::VT_TOPIC as usize)??;
    let payload = match r.field(&p, fb::Publish::VT_PAYLOAD as usize)? {
        Some(pos) => r.vector(pos)?,
        None => 0..0,
    };
    let key = r.opt_string(&p, fb::Publish::VT_IDEMPOTENCY_KEY as usize)?;
    validate_name(namespace, lim.name_bytes_max).ok()?;
    validate_name(topic, lim.name_bytes_max).ok()?;
    if payload.len() > lim.payload_bytes_max
        || key.is_some_and(|k| k.len() > IDEMPOTENCY_KEY_BYTES_MAX)
    {
        return None;
    }
    Some(ClientMsg::Publish {
        request_id,
        namespace: Name::new_unchecked(namespace),
        topic: Name::new_unchecked(topic),
        payload: if payload.is_empty() {
            Bytes::new()
        } else {
            buf.slice(payload)
        },
        idempotency_key: key.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, TestResult};

    fn name(seed: u8, len: u8) -> Name {
        let alphabet = b"abcXYZ019._-";
        let len = usize::from(len % 70).max(1);
        let s: String = (0..len)
            .map(|i| alphabet[(usize::from(seed) + i * 7) % alphabet.len()] as char)
            .collect();
        Name::new_unchecked(&s[..s.len().min(crate::NAME_BYTES_MAX)])
    }

    fn encoded(
        r: u64,
        ns: (u8, u8),
        t: (u8, u8),
        payload: Vec<u8>,
        key: Option<String>,
    ) -> (ClientMsg, Bytes) {
        let m = ClientMsg::Publish {
            request_id: r,
            namespace: name(ns.0, ns.1),
            topic: name(t.0, t.1),
            payload: Bytes::from(payload),
            idempotency_key: key,
        };
        let b = Bytes::from(m.encode_to_vec());
        (m, b)
    }

    quickcheck! {
        fn a_valid_publish_takes_the_fast_path(r: u64, ns: (u8, u8), t: (u8, u8), payload: Vec<u8>, key: Option<String>) -> TestResult {
            if key.as_ref().is_some_and(|k| k.len() > IDEMPOTENCY_KEY_BYTES_MAX) {
                return TestResult::discard();
            }
            let (m, b) = encoded(r, ns, t, payload, key);
            let lim = DecodeLimits::default();
            TestResult::from_bool(publish(&b, &lim) == Some(m.clone()) && ClientMsg::decode_general(&b, &lim) == Ok(m))
        }

        fn what_the_fast_path_accepts_the_verifier_accepts_alike(
            r: u64, ns: (u8, u8), t: (u8, u8), payload: Vec<u8>, edits: Vec<(u16, u8)>, cut: u16
        ) -> bool {
            let (_, b) = encoded(r, ns, t, payload, None);
            let mut v = b.to_vec();
            for (at, byte) in edits {
                if !v.is_empty() {
                    let i = usize::from(at) % v.len();
                    v[i] = byte;
                }
            }
            v.truncate(v.len().saturating_sub(usize::from(cut % 4)));
            let b = Bytes::from(v);
            let lim = DecodeLimits::default();
            match publish(&b, &lim) {
                Some(fast) => ClientMsg::decode_general(&b, &lim) == Ok(fast),
                None => true,
            }
        }
    }

    #[test]
    fn other_messages_and_limits_go_the_general_way() {
        let lim = DecodeLimits::default();
        let ping = Bytes::from(ClientMsg::Ping { nonce: 1 }.encode_to_vec());
        assert_eq!(publish(&ping, &lim), None);
        let (_, big) = encoded(1, (1, 4), (2, 5), vec![0; 100], None);
        let small = DecodeLimits {
            payload_bytes_max: 99,
            ..lim
        };
        assert_eq!(publish(&big, &small), None);
        assert!(ClientMsg::decode(&big, &small).is_err());
    }
}
