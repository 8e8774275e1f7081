//! A connection's queue of frames ([`FrameQueue`]) and what it holds ([`Frame`]).

use std::collections::VecDeque;

use bytes::Bytes;
use fanfare_core::Encoded;

/// A queued frame: a fan-out item whose buffer every subscriber on the shard shares, or one
/// of the connection's own control frames (acks, pongs, errors: no extra allocation).
pub(crate) enum Frame {
    Shared(Encoded),
    Own(Bytes),
}

impl std::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Frame::Shared(e) => e,
            Frame::Own(b) => b,
        }
    }
}

impl Frame {
    /// The frame as `Bytes` (for HTTP/2, whose DATA frames take `Bytes`): a shared frame is
    /// copied, as a batch of frames is (`h2::join`), the way a WebSocket's frames are copied
    /// into its shard's write buffer.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Frame::Shared(e) => Bytes::copy_from_slice(e),
            Frame::Own(b) => b.clone(),
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

    /// Frees the deque's memory once it is empty.
    pub(crate) fn compact(&mut self) {
        if self.more.is_empty() && self.more.capacity() > 0 {
            self.more = VecDeque::new();
        }
    }
}
