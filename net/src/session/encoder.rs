//! How a connection's events go on the wire: one [`Encoder`] per transport mode.
//!
//! | encoder | bytes | used by |
//! |---|---|---|
//! | [`WS`] | WebSocket binary frames of `ServerMessage`s | `/v1/ws` |
//! | [`FRAMES`] | length-prefixed `ServerMessage`s | HTTP streams without `Accept: text/event-stream` |
//! | [`SSE`] | Server-Sent Events | HTTP streams with `Accept: text/event-stream` |
//!
//! A mode that has no form for a control message says so (`None`) instead of sending
//! something else: SSE has no `Subscribed` event, for example.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;

use bytes::{Bytes, BytesMut};
use fanfare_core::{Encoded, EncodingSlot, Message};
use fanfare_proto::message::{item_len, write_item, ItemRef};
use fanfare_proto::{framing, sse, ws as wsp, ServerMsg};
use flatbuffers::FlatBufferBuilder;

use crate::metrics::NetStats;
use crate::session::queue::{Frame, WsAck};
use crate::slots;

thread_local! {
    /// Where a shared frame is built before it is copied into its own allocation
    /// ([`shared_frame`]); one per shard thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Capacity the scratch buffer keeps between frames; a larger frame's buffer is dropped after
/// it (the limit on what one shard holds for the largest message it ever encoded).
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// A shared frame that `write` appends, in one allocation of exactly its size with its
/// reference count: built in the thread's scratch buffer and copied once (a `Vec` turned into
/// an `Rc<[u8]>` would be copied too, after an allocation of its own). Measured: one
/// allocation per fan-out item instead of two (the frame's `Vec` and an `Rc` holding it).
pub(crate) fn shared_frame(write: impl FnOnce(&mut Vec<u8>)) -> Encoded {
    SCRATCH.with(|cell| {
        // `write` is an encoder's writer, which never builds another shared frame: the
        // borrow is never taken twice. Should that change, a fresh buffer still works.
        let Ok(mut scratch) = cell.try_borrow_mut() else {
            let mut own = Vec::new();
            write(&mut own);
            return Rc::from(own);
        };
        scratch.clear();
        write(&mut scratch);
        let frame: Encoded = Rc::from(&scratch[..]);
        if scratch.capacity() > SCRATCH_KEEP_BYTES {
            *scratch = Vec::new();
        }
        frame
    })
}

/// One transport mode's encoding of server events.
pub(crate) trait Encoder {
    /// Its slot in a delivery's encoding cache.
    fn slot(&self) -> EncodingSlot;
    /// A name for logs.
    fn name(&self) -> &'static str;
    /// The HTTP content type of a stream in this mode.
    fn content_type(&self) -> &'static str;
    /// Whether the connection carries exactly one subscription (an HTTP stream): when it ends,
    /// the connection ends.
    fn one_subscription(&self) -> bool;
    /// Whether the server pings the client and closes it when idle (WebSocket only: HTTP
    /// streams have no ping, and a stream is never idle while subscribed).
    fn pings(&self) -> bool;
    /// The counter of items this mode encoded.
    fn encodes<'s>(&self, stats: &'s NetStats) -> &'s AtomicU64;
    /// A fan-out item of the topic with local id `topic` (encoded once per shard, shared).
    fn item(&self, topic: u64, m: &Message) -> Encoded;
    /// A control message, or `None` when this mode has no form for it.
    fn control(&self, fbb: &mut FlatBufferBuilder<'static>, msg: &ServerMsg) -> Option<Bytes>;
    /// A control message as a queued frame ([`Encoder::control`]'s bytes, unless the mode
    /// keeps a cheaper form until the frame is written).
    fn control_frame(
        &self,
        fbb: &mut FlatBufferBuilder<'static>,
        msg: &ServerMsg,
    ) -> Option<Frame> {
        self.control(fbb, msg).map(|b| Frame::Own(Vec::from(b)))
    }
    /// The last bytes of a connection ending with `code` and `reason` (may be empty).
    fn goodbye(&self, code: u16, reason: &str) -> Bytes;
}

/// WebSocket binary frames.
pub(crate) struct Ws;
/// Length-prefixed frames on an HTTP body.
pub(crate) struct Frames;
/// Server-Sent Events on an HTTP body.
pub(crate) struct Sse;

/// The WebSocket encoder.
pub(crate) static WS: Ws = Ws;
/// The length-prefixed frame encoder.
pub(crate) static FRAMES: Frames = Frames;
/// The SSE encoder.
pub(crate) static SSE: Sse = Sse;

fn item_ref(topic: u64, m: &Message) -> ItemRef<'_> {
    ItemRef {
        subscription_id: topic,
        epoch: m.epoch.0,
        seq: m.seq.0,
        payload: &m.payload,
        publisher_id: m.publisher_id.as_deref(),
    }
}

/// A publish acknowledgement's WebSocket frame from its template (no builder run: one per
/// publish makes this the most frequent control message); `None` for any other message.
fn publish_ack_frame(msg: &ServerMsg) -> Option<Bytes> {
    WsAck::of(msg).map(|a| Frame::WsAck(a).to_bytes())
}

fn flatbuffer<'f>(fbb: &'f mut FlatBufferBuilder<'static>, msg: &ServerMsg) -> &'f [u8] {
    msg.encode_into(fbb);
    fbb.finished_data()
}

impl Encoder for Ws {
    fn slot(&self) -> EncodingSlot {
        slots::WS
    }
    fn name(&self) -> &'static str {
        "ws"
    }
    fn content_type(&self) -> &'static str {
        "application/octet-stream"
    }
    fn one_subscription(&self) -> bool {
        false
    }
    fn pings(&self) -> bool {
        true
    }
    fn encodes<'s>(&self, stats: &'s NetStats) -> &'s AtomicU64 {
        &stats.encodes_ws
    }
    fn item(&self, topic: u64, m: &Message) -> Encoded {
        let it = item_ref(topic, m);
        shared_frame(|out| {
            wsp::put_server_frame_with(out, wsp::Opcode::Binary, item_len(&it), |out| {
                write_item(out, &it)
            })
        })
    }
    fn control(&self, fbb: &mut FlatBufferBuilder<'static>, msg: &ServerMsg) -> Option<Bytes> {
        if let Some(frame) = publish_ack_frame(msg) {
            return Some(frame);
        }
        Some(wsp::encode_server_frame(
            wsp::Opcode::Binary,
            flatbuffer(fbb, msg),
        ))
    }
    fn control_frame(
        &self,
        fbb: &mut FlatBufferBuilder<'static>,
        msg: &ServerMsg,
    ) -> Option<Frame> {
        if let Some(ack) = WsAck::of(msg) {
            return Some(Frame::WsAck(ack));
        }
        self.control(fbb, msg).map(|b| Frame::Own(Vec::from(b)))
    }
    fn goodbye(&self, code: u16, reason: &str) -> Bytes {
        wsp::encode_server_frame(wsp::Opcode::Close, &wsp::close_payload(code, reason))
    }
}

impl Encoder for Frames {
    fn slot(&self) -> EncodingSlot {
        slots::FRAMES
    }
    fn name(&self) -> &'static str {
        "frames"
    }
    fn content_type(&self) -> &'static str {
        "application/x-fanfare-frames"
    }
    fn one_subscription(&self) -> bool {
        true
    }
    fn pings(&self) -> bool {
        false
    }
    fn encodes<'s>(&self, stats: &'s NetStats) -> &'s AtomicU64 {
        &stats.encodes_frames
    }
    fn item(&self, topic: u64, m: &Message) -> Encoded {
        let it = item_ref(topic, m);
        shared_frame(|out| framing::put_frame_with(out, item_len(&it), |out| write_item(out, &it)))
    }
    fn control(&self, fbb: &mut FlatBufferBuilder<'static>, msg: &ServerMsg) -> Option<Bytes> {
        Some(framing::encode_to_bytes(flatbuffer(fbb, msg)))
    }
    fn goodbye(&self, _code: u16, _reason: &str) -> Bytes {
        Bytes::new()
    }
}

impl Encoder for Sse {
    fn slot(&self) -> EncodingSlot {
        slots::SSE
    }
    fn name(&self) -> &'static str {
        "sse"
    }
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
    fn one_subscription(&self) -> bool {
        true
    }
    fn pings(&self) -> bool {
        false
    }
    fn encodes<'s>(&self, stats: &'s NetStats) -> &'s AtomicU64 {
        &stats.encodes_sse
    }
    fn item(&self, _topic: u64, m: &Message) -> Encoded {
        shared_frame(|out| sse::encode_item(out, m.epoch.0, m.seq.0, &m.payload))
    }
    fn control(&self, _fbb: &mut FlatBufferBuilder<'static>, msg: &ServerMsg) -> Option<Bytes> {
        let mut b = BytesMut::new();
        match msg {
            ServerMsg::Discontinuity {
                last_seq,
                new_seq,
                new_epoch,
                ..
            } => sse::encode_discontinuity(&mut b, *last_seq, *new_seq, *new_epoch),
            ServerMsg::Heartbeat {
                epoch, next_seq, ..
            } => sse::encode_heartbeat(&mut b, *epoch, *next_seq),
            ServerMsg::Error { text, .. } | ServerMsg::SubscriptionClosed { text, .. } => {
                sse::encode_error(&mut b, text)
            }
            ServerMsg::PresenceEvent { event, .. } => {
                let data = crate::presence::event_json(event).to_string();
                b.extend_from_slice(b"event: presence\ndata: ");
                b.extend_from_slice(data.as_bytes());
                b.extend_from_slice(b"\n\n");
            }
            // An SSE stream has no events for the rest (its subscription is the request).
            _ => return None,
        }
        Some(b.freeze())
    }
    fn goodbye(&self, _code: u16, reason: &str) -> Bytes {
        let mut b = BytesMut::new();
        sse::encode_error(&mut b, reason);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare_proto::ErrorCode;

    fn fbb() -> FlatBufferBuilder<'static> {
        FlatBufferBuilder::new()
    }

    #[test]
    fn sse_has_no_subscribed_event_and_never_emits_frames() {
        let subscribed = ServerMsg::Subscribed {
            request_id: 1,
            subscription_id: 2,
            epoch: 3,
            next_seq: 4,
            member_id: 0,
        };
        assert_eq!(SSE.control(&mut fbb(), &subscribed), None);
        let err = ServerMsg::Error {
            request_id: 0,
            code: ErrorCode::TokenExpired,
            text: "token expired".into(),
        };
        let b = SSE.control(&mut fbb(), &err).unwrap();
        assert!(b.starts_with(b"event: error"), "{b:?}");
        assert!(FRAMES.control(&mut fbb(), &subscribed).is_some());
    }

    #[test]
    fn slots_differ() {
        let slots = [WS.slot(), FRAMES.slot(), SSE.slot(), slots::LINK];
        for (i, a) in slots.iter().enumerate() {
            for b in &slots[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
