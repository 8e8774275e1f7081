//! The engine's side of a cluster: where topics live across nodes, and the trait through
//! which a router shard talks to storage nodes.
//!
//! The engine stays free of sockets and membership: the network layer (`fanfare-net`) runs
//! the gossip, hands every shard the current [`NodeView`] ([`crate::ShardHandle::set_view`]),
//! and implements [`Upstream`] with one link per storage node. The engine decides, with the
//! same rendezvous hash it uses for shards ([`crate::placement`]), which node owns each topic,
//! keeps one upstream interest per topic per shard however many local subscribers it has, and
//! repositions its subscribers (with one discontinuity) when a topic changes owner.

use std::sync::Arc;

use bytes::Bytes;
use fanfare_proto::Start;

use crate::ids::{Epoch, Seq, TopicKey};
use crate::message::{Message, PublishError, PublishMeta, Published, SubscribeError};
use crate::placement;
use crate::presence::{PresenceDelta, PresenceQuery, PresenceState};

/// A node's placement identity: the xxh3 of its node id (fixed output, see [`placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey(pub u64);

impl NodeKey {
    /// The key of the node named `node_id`.
    pub fn of(node_id: &str) -> Self {
        NodeKey(xxhash_rust::xxh3::xxh3_64(node_id.as_bytes()))
    }
}

/// The live storage nodes as this node sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// This node, when it has the storage role.
    pub this: Option<NodeKey>,
    /// Every live node with the storage role (this one included when it has the role).
    pub storage: Vec<NodeKey>,
}

impl NodeView {
    /// The node owning `key`: rendezvous over the live storage nodes; `None` when there is
    /// none.
    pub fn owner(&self, key: &TopicKey) -> Option<NodeKey> {
        placement::place(key.as_str().as_bytes(), self.storage.iter().map(|n| n.0)).map(NodeKey)
    }
}

/// Shared view handed to every shard.
pub type SharedView = Arc<NodeView>;

/// What a router shard asks of a storage node. Every request is answered asynchronously
/// through the [`crate::ShardHandle`] `up_*` methods; a request may be lost when its link
/// drops, which the link reports with [`crate::ShardHandle::up_reset`] once it is back.
#[derive(Debug)]
pub enum UpReq {
    /// Keep the topic's live messages coming to this shard (idempotent), and answer request
    /// `id` with where a subscriber starting at `start` begins ([`Replay`]).
    Request {
        /// The topic.
        key: TopicKey,
        /// Where the subscriber starts.
        start: Start,
        /// Request id, echoed in the answer (never 0).
        id: u64,
    },
    /// This shard has no subscriber of the topic any more.
    Drop {
        /// The topic.
        key: TopicKey,
    },
    /// Order a message on the owner; `reply` gets its position (after the owner ordered it)
    /// or why not.
    Publish {
        /// The topic.
        key: TopicKey,
        /// The body.
        payload: Bytes,
        /// The publisher and idempotency key.
        meta: PublishMeta,
        /// Where the answer goes.
        reply: flume::Sender<Result<Published, PublishError>>,
    },
    /// A change of this shard's presence share of a topic (a reset replaces it whole).
    Presence {
        /// The topic.
        key: TopicKey,
        /// The change.
        delta: PresenceDelta,
    },
    /// A presence query; `reply` gets the answer, or `Unavailable` when the link is down.
    PresenceQuery {
        /// The topic.
        key: TopicKey,
        /// What is asked.
        q: PresenceQuery,
        /// Where the answer goes.
        reply: flume::Sender<Result<PresenceState, SubscribeError>>,
    },
}

/// A router shard's way to storage nodes. Implementations queue and return at once: `send`
/// is called with the shard's state borrowed and must not call back into the shard.
pub trait Upstream {
    /// Sends `req` to `node`. A publish that cannot be sent is answered with
    /// [`PublishError::Unavailable`]; other requests may be dropped while the link is down.
    fn send(&self, node: NodeKey, req: UpReq);
}

/// Where a subscriber begins, as an owner answers a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The topic's epoch.
    pub epoch: Epoch,
    /// The first sequence the subscriber gets.
    pub start: Seq,
    /// Set when the requested position is lost: `(last_seq, new_seq, new_epoch)`.
    pub gap: Option<(Seq, Seq, Epoch)>,
    /// History from `start` on, in order.
    pub items: Vec<Message>,
    /// `items` is one page read from the owner's disk: ask again from where it ends for the
    /// rest.
    pub more: bool,
}
