//! What shards say to each other, and the per-peer outboxes it waits in.
//!
//! A shard never sends one channel message per [`MeshMsg`]: messages for a peer queue in
//! that peer's outbox, and one flusher task per peer (`run.rs`) sends everything queued as
//! one batch over glommio's lock-free channel mesh. A busy shard sends few, large batches; an
//! idle one sends at once.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;

use bytes::Bytes;
use fanfare_proto::Start;

use crate::ids::{ShardId, SubId, TopicKey};
use crate::message::{Message, PublishError, PublishMeta, Published, SubscribeError};
use crate::presence::{PresenceDelta, PresenceEvent, PresenceQuery, PresenceState};
use crate::shard::disk::{Answer, FetchCallback};
use crate::shard::local::shrink_map;
use crate::shard::position::OwnerReply;

/// Most messages one mesh batch carries (bounds the time a receiver spends on one batch).
pub(crate) const MESH_BATCH_MAX: usize = 1024;

/// A message between shards.
pub(crate) enum MeshMsg {
    /// Router to owner: order this message, and answer shard `from` with a `PublishReply`
    /// for `ticket` (it keeps the answer's destination in its `MeshPort`): answers
    /// travel batched with the rest of the mesh traffic, no channel and no cross-thread
    /// wake-up per publish.
    Publish {
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
        from: ShardId,
        ticket: u64,
    },
    /// Owner to router: the answer to a `Publish`.
    PublishReply {
        ticket: u64,
        reply: Result<Published, PublishError>,
    },
    /// Router to owner: shard `from` wants the topic's messages from `start` on, for `sub`.
    Subscribe {
        key: TopicKey,
        start: Start,
        from: ShardId,
        sub: SubId,
    },
    /// Router to owner: shard `from` has no subscribers of the topic any more.
    Uninterest { key: TopicKey, from: ShardId },
    /// Owner to router: the answer to `Subscribe`.
    SubscribeReply {
        sub: SubId,
        reply: Result<OwnerReply, SubscribeError>,
    },
    /// Owner to router: a live message.
    Item { key: TopicKey, msg: Message },
    /// A node link's shard to owner: where a subscriber starting at `start` begins, without
    /// adding interest (the answer travels with the topic's items, so it stays in order).
    Fetch {
        key: TopicKey,
        start: Start,
        from: ShardId,
        token: u64,
    },
    /// Owner to the asking shard: the answer to `Fetch`.
    FetchReply {
        token: u64,
        reply: Result<OwnerReply, SubscribeError>,
    },
    /// Router to owner: a change of shard `from`'s presence share of a topic.
    Presence {
        key: TopicKey,
        from: ShardId,
        delta: PresenceDelta,
    },
    /// Owner to router: a presence event of a topic.
    PresenceEvent { key: TopicKey, event: PresenceEvent },
    /// To owner: a presence query.
    PresenceQuery {
        key: TopicKey,
        q: PresenceQuery,
        reply: flume::Sender<Result<PresenceState, SubscribeError>>,
    },
    /// The sender stopped taking work (shutdown): everything it sent before is ahead of this.
    Fin,
}

/// Whether an outbox took a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the peer.
    Queued,
    /// A live item dropped because the outbox is full (the receiver repairs the gap from
    /// history).
    DroppedItem,
    /// The outbox is closed (shutdown); a publish was answered `ShuttingDown`.
    Closed,
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<MeshMsg>,
    waker: Option<Waker>,
    closed: bool,
}

/// One outbox per peer shard (the slot of this shard itself stays empty).
pub(crate) struct Outboxes {
    boxes: Vec<Outbox>,
    /// `mesh_outbox_messages_max`: past it, live items are dropped.
    items_max: usize,
}

impl Outboxes {
    pub(crate) fn new(shards: u16, items_max: usize) -> Self {
        Self {
            boxes: (0..shards).map(|_| Outbox::default()).collect(),
            items_max,
        }
    }

    /// Whether `to` stopped taking messages (its outbox closed at shutdown).
    pub(crate) fn is_closed(&self, to: ShardId) -> bool {
        !matches!(self.boxes.get(usize::from(to.0)), Some(ob) if !ob.closed)
    }

    /// Queues `msg` for shard `to`. Overflow rule: live items are dropped past `items_max`
    /// (the receiver sees the sequence gap and repairs it from history); requests and replies
    /// are always queued, and they are bounded by the client-facing limits that produce them.
    pub(crate) fn push(&mut self, to: ShardId, msg: MeshMsg) -> Pushed {
        let max = self.items_max;
        let ob = &mut self.boxes[usize::from(to.0)];
        if ob.closed {
            if let MeshMsg::PresenceQuery { reply, .. } = msg {
                let _ = reply.try_send(Err(SubscribeError::ShuttingDown));
            }
            return Pushed::Closed;
        }
        if ob.queue.len() >= max && matches!(msg, MeshMsg::Item { .. }) {
            return Pushed::DroppedItem;
        }
        ob.queue.push_back(msg);
        if let Some(w) = ob.waker.take() {
            w.wake();
        }
        Pushed::Queued
    }

    /// The next batch for `peer` (everything queued, up to [`MESH_BATCH_MAX`]); `None` once
    /// the outbox is closed and empty.
    pub(crate) fn poll_batch(
        &mut self,
        peer: u16,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Vec<MeshMsg>>> {
        let ob = &mut self.boxes[usize::from(peer)];
        if ob.queue.is_empty() {
            if ob.closed {
                return Poll::Ready(None);
            }
            ob.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = ob.queue.len().min(MESH_BATCH_MAX);
        Poll::Ready(Some(ob.queue.drain(..n).collect()))
    }

    /// Everything queued for `peer` (the model test drives the mesh by hand).
    #[cfg(test)]
    pub(crate) fn take(&mut self, peer: u16) -> Vec<MeshMsg> {
        self.boxes[usize::from(peer)].queue.drain(..).collect()
    }

    /// Closes every outbox: what is queued still goes out, nothing more is taken.
    pub(crate) fn close_all(&mut self) {
        for ob in self.boxes.iter_mut() {
            ob.closed = true;
            if let Some(w) = ob.waker.take() {
                w.wake();
            }
        }
    }
}

/// The door to the other shards of this node, owned by one part: the outboxes, what waits
/// for other shards' answers (forwarded publishes, fetches) and the shutdown barrier's count.
///
/// Invariants (checked after every change in debug and test builds): no publish waits on this
/// shard itself; a waiting publish has at most one answer attached (a second one is handed
/// back by [`MeshPort::attach`]).
pub(crate) struct MeshPort {
    me: ShardId,
    outboxes: Outboxes,
    /// Publishes forwarded to an owner shard, by ticket: that shard and where the answer goes
    /// (attached right after forwarding; see `router.rs`).
    publish_waiters: AHashMap<u64, (ShardId, Option<Answer>)>,
    /// Fetches sent to other shards, by token.
    fetch_waiters: AHashMap<u64, FetchCallback>,
    /// Peers whose `Fin` arrived during shutdown.
    fins: usize,
}

impl MeshPort {
    /// The mesh door of shard `me` of `shards`, with `items_max` live items per outbox.
    pub(crate) fn new(me: ShardId, shards: u16, items_max: usize) -> Self {
        MeshPort {
            me,
            outboxes: Outboxes::new(shards, items_max),
            publish_waiters: AHashMap::new(),
            fetch_waiters: AHashMap::new(),
            fins: 0,
        }
    }

    /// Queues `msg` for shard `to` (see [`Outboxes::push`] for the overflow rule).
    pub(crate) fn send(&mut self, to: ShardId, msg: MeshMsg) -> Pushed {
        debug_assert_ne!(to, self.me, "a shard never sends to itself over the mesh");
        self.outboxes.push(to, msg)
    }

    /// Whether `to` stopped taking messages (shutdown).
    pub(crate) fn is_closed(&self, to: ShardId) -> bool {
        self.outboxes.is_closed(to)
    }

    /// The outboxes, for the flushers and shutdown.
    pub(crate) fn outboxes(&mut self) -> &mut Outboxes {
        &mut self.outboxes
    }

    /// A publish forwarded to `owner` under `ticket` waits for its answer. Returns how many
    /// wait.
    pub(crate) fn wait_publish(&mut self, ticket: u64, owner: ShardId) -> usize {
        debug_assert_ne!(owner, self.me);
        self.publish_waiters.insert(ticket, (owner, None));
        self.publish_waiters.len()
    }

    /// Attaches where the answer to forwarded publish `ticket` goes; hands `answer` back when
    /// nothing will answer it (its owner stopped) or an answer is attached already.
    pub(crate) fn attach(&mut self, ticket: u64, answer: Answer) -> Result<(), Answer> {
        match self.publish_waiters.get_mut(&ticket) {
            Some((_, slot)) if slot.is_none() => {
                *slot = Some(answer);
                Ok(())
            }
            _ => Err(answer),
        }
    }

    /// The answer to forwarded publish `ticket` came: where it goes (None: nobody attached
    /// one, or it was not waiting), and how many still wait.
    pub(crate) fn answered(&mut self, ticket: u64) -> (Option<Answer>, usize) {
        let waiter = self.publish_waiters.remove(&ticket);
        if self.publish_waiters.is_empty() && self.publish_waiters.capacity() > 1024 {
            self.publish_waiters.shrink_to(64);
        }
        (waiter.and_then(|(_, a)| a), self.publish_waiters.len())
    }

    /// The tickets of the publishes waiting on shard `owner`.
    pub(crate) fn waiting_on(&self, owner: ShardId) -> Vec<u64> {
        self.publish_waiters
            .iter()
            .filter(|(_, (o, _))| *o == owner)
            .map(|(t, _)| *t)
            .collect()
    }

    /// A fetch sent under `token` waits for its answer.
    pub(crate) fn wait_fetch(&mut self, token: u64, cb: FetchCallback) {
        self.fetch_waiters.insert(token, cb);
    }

    /// The answer to fetch `token` came: where it goes.
    pub(crate) fn fetched(&mut self, token: u64) -> Option<FetchCallback> {
        self.fetch_waiters.remove(&token)
    }

    /// A peer's `Fin` arrived.
    pub(crate) fn fin(&mut self) {
        self.fins += 1;
    }

    /// How many peers' `Fin` arrived.
    pub(crate) fn fins(&self) -> usize {
        self.fins
    }

    /// Gives back what the maps grew to in a burst.
    pub(crate) fn compact(&mut self) {
        shrink_map(&mut self.fetch_waiters);
    }
}
