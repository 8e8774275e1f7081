//! Where a shard hands events to a subscriber.
//!
//! A [`Sink`] is the subscriber side of the engine: the library's [`crate::Subscription`]
//! queue, or a network connection in `fanfare-net`. The shard calls [`Sink::offer`] with
//! events in order; for items it passes a [`Delivery`], through which a sink asks for the
//! message encoded for its transport. The first sink that asks encodes; every other sink on
//! the shard gets the same refcounted buffer. That is the zero-copy fan-out: one encode per
//! message, shard and encoding, whatever the number of subscribers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use crate::ids::{Epoch, LocalTopicId, Seq, SubId};
use crate::message::{CloseReason, Message};
use crate::presence::{MemberId, PresenceEvent};

/// An encoded message as sinks share it: one buffer per message, shard and encoding, counted
/// with a plain (non-atomic) reference count, since it never leaves its shard. The count and
/// the bytes share one allocation.
pub type Encoded = Rc<[u8]>;

/// Number of distinct encodings a [`Delivery`] can cache (WebSocket frame, length-prefixed
/// frame, SSE event, node-link frame).
pub const ENCODINGS: usize = 4;

/// A slot in a [`Delivery`]'s encoding cache: one per wire encoding. Made only by
/// [`EncodingSlot::new`], which refuses (at compile time, in a `const`) an index past
/// [`ENCODINGS`], so two encodings can never share a slot by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingSlot(u8);

impl EncodingSlot {
    /// Slot `index` (< [`ENCODINGS`]). Define slots as constants so a bad index fails the
    /// build: `const SLOT_WS: EncodingSlot = EncodingSlot::new(0);`.
    pub const fn new(index: usize) -> Self {
        assert!(index < ENCODINGS, "encoding slot past ENCODINGS");
        Self(index as u8)
    }

    /// The slot's index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the engine offers a [`Sink`], in order, for one subscription.
#[derive(Debug)]
#[non_exhaustive]
pub enum Offer<'a> {
    /// The subscription is live; `next_seq` is the first sequence it will deliver.
    Subscribed {
        /// The topic's local id (shared by all its subscribers on this shard).
        topic: LocalTopicId,
        /// The topic's epoch.
        epoch: Epoch,
        /// First sequence to be delivered (after the discontinuity, if one follows).
        next_seq: Seq,
        /// Its presence member id, when it asked to enter.
        member: Option<MemberId>,
    },
    /// A message.
    Item(&'a Delivery<'a>),
    /// Messages were missed (see [`crate::Event::Discontinuity`]).
    Discontinuity {
        /// Last sequence delivered or resumed from.
        last_seq: Seq,
        /// Next sequence to be delivered.
        new_seq: Seq,
        /// Its epoch.
        new_epoch: Epoch,
    },
    /// The topic was quiet for a heartbeat interval.
    Heartbeat {
        /// Epoch.
        epoch: Epoch,
        /// Next sequence to be delivered.
        next_seq: Seq,
    },
    /// The subscription ended; nothing follows.
    Closed(&'a CloseReason),
    /// A presence event the subscription asked for (a node link's subscription gets all of
    /// them). Never refused: they are rate-limited per topic.
    Presence(&'a PresenceEvent),
}

/// What a sink did with an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Queued.
    Queued,
    /// No room: the subscriber lags from this item on, until it calls `drained`.
    Full,
    /// The subscriber is gone; the engine drops the subscription.
    Gone,
}

/// A subscriber's end of the engine. Called on the subscriber's shard only.
///
/// Rules: `offer` must not call back into the shard; control events (`Subscribed`,
/// `Discontinuity`, `Closed`) must be queued even past the sink's byte limit (there are at
/// most a few per subscription); `Full` is for items and heartbeats only.
pub trait Sink {
    /// Offers the next event of subscription `sub`.
    fn offer(&self, sub: SubId, offer: Offer<'_>) -> Accept;

    /// A hint that [`Sink::offer`] comes soon: the engine calls it a few subscribers ahead
    /// while it fans a message out, so a sink whose state is likely out of the CPU's cache
    /// can start loading it. Must be cheap, never block, and change nothing.
    fn prefetch(&self) {}

    /// The second step of [`Sink::prefetch`], called closer to the offer, once the sink's own
    /// state is likely in cache: what that state points to (where the item will be queued).
    fn prefetch_queue(&self) {}

    /// Whether this subscriber ends itself once shutdown is signalled (a network connection
    /// sends its queue, says goodbye and unsubscribes). Shutdown waits up to `drain_timeout`
    /// for such subscribers; every other one is closed at once with `ShuttingDown`.
    fn drains_itself(&self) -> bool {
        false
    }
}

/// One message on its way to the local subscribers of a topic on one shard.
pub struct Delivery<'a> {
    /// The topic's local id (every subscriber of it on this shard shares it).
    pub topic: LocalTopicId,
    /// The message.
    pub message: &'a Message,
    /// When the shard hands it to its subscribers, as its caller read the clock: once per
    /// item received from another shard (`run.rs`) or node, once per batch of durable
    /// publishes released (`store.rs`), once per subscribe answer's replay, and, on the
    /// owner's shard, the reading the publish was ordered at (one per socket read for a
    /// WebSocket's publishes, one per publish for the others).
    /// With the message's `published_at`, what latency metrics measure.
    pub now: Instant,
    cache: RefCell<[Option<Encoded>; ENCODINGS]>,
}

impl<'a> Delivery<'a> {
    /// A delivery at `now` with an empty encoding cache.
    pub fn new(topic: LocalTopicId, message: &'a Message, now: Instant) -> Self {
        Self {
            topic,
            message,
            now,
            cache: RefCell::new(Default::default()),
        }
    }

    /// The message in encoding `slot`: built by `encode` the first time it is asked for, then
    /// the same buffer for every later caller.
    pub fn encoded(
        &self,
        slot: EncodingSlot,
        encode: impl FnOnce(LocalTopicId, &Message) -> Encoded,
    ) -> Encoded {
        let slot = slot.index();
        if let Some(b) = &self.cache.borrow()[slot] {
            return b.clone();
        }
        let b = encode(self.topic, self.message);
        self.cache.borrow_mut()[slot] = Some(b.clone());
        b
    }
}

impl std::fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("seq", &self.message.seq)
            .finish()
    }
}
