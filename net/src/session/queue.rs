//! A connection's queue of frames ([`FrameQueue`]) and what it holds ([`Frame`]).

use std::collections::VecDeque;

use bytes::Bytes;
use fanfare_core::Encoded;
use fanfare_proto::message::{publish_ack_len, write_publish_ack, ServerMsg};
use fanfare_proto::{ws as wsp, Durability};

/// A queued frame: a fan-out item whose buffer every subscriber on the shard shares, one of
/// the connection's own control frames (pongs, errors), or a WebSocket publish ack, kept as
/// its four fields and written from the ack template when it is taken for a write: no
/// allocation per ack. 32 bytes: the ack's `Durability` leaves room for the tag, and the
/// other variants fit beside it (a `Bytes` in `Own` would make it 40; `Frame`'s size test).
pub(crate) enum Frame {
    Shared(Encoded),
    Own(Vec<u8>),
    WsAck(WsAck),
}

/// A `PublishAck`'s fields, queued on a WebSocket connection ([`Frame::WsAck`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WsAck {
    pub request_id: u64,
    pub epoch: u64,
    pub seq: u64,
    pub durability: Durability,
}

impl WsAck {
    /// `msg`'s fields when it is a `PublishAck` and the ack template exists.
    pub(crate) fn of(msg: &ServerMsg) -> Option<WsAck> {
        let &ServerMsg::PublishAck {
            request_id,
            epoch,
            seq,
            durability,
        } = msg
        else {
            return None;
        };
        WsAck::frame_len()?;
        Some(WsAck {
            request_id,
            epoch,
            seq,
            durability,
        })
    }

    /// Bytes of the ack's WebSocket frame; `None` when there is no ack template (then acks
    /// are built as control frames instead, and no `WsAck` is ever queued).
    pub(crate) fn frame_len() -> Option<usize> {
        publish_ack_len().map(wsp::server_frame_len)
    }

    // Out of line: `Frame::put` runs per fan-out frame and must stay small enough to inline.
    #[inline(never)]
    fn put(&self, out: &mut Vec<u8>) {
        // A WsAck is made only where the template exists (`frame_len` is `Some`).
        let len = publish_ack_len().unwrap_or(0);
        wsp::put_server_frame_with(out, wsp::Opcode::Binary, len, |out| {
            write_publish_ack(out, self.request_id, self.epoch, self.seq, self.durability);
        });
    }
}

impl Frame {
    /// Bytes of the frame on the wire.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Frame::Shared(e) => e.len(),
            Frame::Own(b) => b.len(),
            Frame::WsAck(_) => WsAck::frame_len().unwrap_or(0),
        }
    }

    /// The frame's bytes where it holds them (an ack is written on demand: `None`).
    #[inline]
    pub fn held(&self) -> Option<&[u8]> {
        match self {
            Frame::Shared(e) => Some(e),
            Frame::Own(b) => Some(b),
            Frame::WsAck(_) => None,
        }
    }

    /// Appends the frame's bytes to `out`.
    #[inline]
    pub fn put(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Shared(e) => out.extend_from_slice(e),
            Frame::Own(b) => out.extend_from_slice(b),
            Frame::WsAck(a) => a.put(out),
        }
    }

    /// The frame as `Bytes`, copied (HTTP/2 sends a lone shared frame as it is: `h2::join`).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Frame::Shared(e) => Bytes::copy_from_slice(e),
            Frame::Own(b) => Bytes::copy_from_slice(b),
            Frame::WsAck(_) => {
                let mut v = Vec::with_capacity(self.len());
                self.put(&mut v);
                Bytes::from(v)
            }
        }
    }
}

/// A connection's queue of frames. The first frame is held inline: an idle connection gets
/// one frame now and then (an item, a ping), and that must not cost it a heap allocation kept
/// for its lifetime; a burst spills into the deque, whose memory the sweep gives back.
#[derive(Default)]
pub(crate) struct FrameQueue {
    /// The oldest frame; `None` only when the deque is empty too.
    head: Option<Frame>,
    more: VecDeque<Frame>,
}

impl FrameQueue {
    pub(crate) fn push(&mut self, f: Frame) {
        if self.head.is_none() {
            self.head = Some(f);
        } else {
            self.more.push_back(f);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Frame> {
        let f = self.head.take();
        self.head = self.more.pop_front();
        f
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Frame> {
        self.head.iter().chain(self.more.iter())
    }

    pub(crate) fn clear(&mut self) {
        self.head = None;
        self.more.clear();
    }

    /// Where the next [`FrameQueue::push`] stores its frame when that is outside the queue
    /// itself (in the deque's buffer), for a prefetch; `None` when it is the inline slot or
    /// the deque has no buffer yet. A hint, not a promise: when the ring wraps the frame goes
    /// to the buffer's start and this points just past its end, and when the buffer is full
    /// the push reallocates (neither matters to a prefetch, which never faults).
    pub(crate) fn next_slot(&self) -> Option<*const Frame> {
        if self.head.is_none() || self.more.capacity() == 0 {
            return None;
        }
        let (a, b) = self.more.as_slices();
        let tail = if b.is_empty() { a } else { b };
        Some(tail.as_ptr_range().end)
    }

    /// Frees the deque's memory once it is empty.
    pub(crate) fn compact(&mut self) {
        if self.more.is_empty() && self.more.capacity() > 0 {
            self.more = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::encoder::{Encoder, WS};
    use fanfare_proto::ServerMsg;
    use flatbuffers::FlatBufferBuilder;

    #[test]
    fn a_queued_frame_takes_32_bytes() {
        // Every connection holds one inline (`FrameQueue`), and a burst a deque of them.
        assert_eq!(std::mem::size_of::<Frame>(), 32);
    }

    #[test]
    fn next_slot_is_where_the_next_push_stores_its_frame() {
        let mut q = FrameQueue::default();
        assert!(q.next_slot().is_none(), "the first frame goes inline");
        q.push(Frame::Own(vec![0]));
        assert!(q.next_slot().is_none(), "no buffer yet");
        for i in 1..40u8 {
            let predicted = q.next_slot();
            let room = q.more.len() < q.more.capacity();
            q.push(Frame::Own(vec![i]));
            if let (Some(p), true) = (predicted, room) {
                let stored = q.more.back().expect("just pushed");
                // Exact, except where the ring wraps: the frame went to the buffer's start
                // (the first of the second slice) and the hint was just past its end.
                let wrapped = q.more.as_slices().1.len() == 1;
                assert!(
                    std::ptr::eq(p, stored) || wrapped,
                    "frame {i} stored where predicted"
                );
            }
            // Popping from the front moves the deque's head: the prediction must follow.
            if i % 3 == 0 {
                q.pop();
            }
        }
    }

    #[test]
    fn a_queued_ws_ack_writes_a_frame_a_client_decodes_to_the_ack() {
        let mut fbb = FlatBufferBuilder::new();
        for (request_id, epoch, seq, durability) in [
            (1, 1, 1, Durability::Memory),
            (u64::MAX, 7, 1 << 40, Durability::Synced),
            (9, 2, 3, Durability::Written),
            (0, u64::MAX, 0, Durability::Memory),
        ] {
            let msg = ServerMsg::PublishAck {
                request_id,
                epoch,
                seq,
                durability,
            };
            let queued = WS.control_frame(&mut fbb, &msg).expect("a queued ack");
            assert!(matches!(queued, Frame::WsAck(_)), "kept as its fields");
            let mut out = b"before".to_vec();
            queued.put(&mut out);
            assert_eq!(&out[..6], b"before");
            assert_eq!(out.len() - 6, queued.len());
            assert_eq!(queued.to_bytes(), out[6..]);
            assert_eq!(WS.control(&mut fbb, &msg).expect("an ack"), out[6..]);
            // Decoded the way a client does: one binary frame holding exactly the ack.
            let mut wire = bytes::BytesMut::from(&out[6..]);
            let mut dec = wsp::Decoder::new(wsp::Role::Client, wsp::Limits::default());
            let Ok(Some(wsp::Message::Binary(payload))) = dec.decode(&mut wire) else {
                panic!("not one binary frame");
            };
            assert!(wire.is_empty());
            let lim = fanfare_proto::DecodeLimits::default();
            assert_eq!(ServerMsg::decode(&payload, &lim), Ok(msg));
        }
    }
}
