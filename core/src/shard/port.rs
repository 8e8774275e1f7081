//! [`ClusterPort`]: what a node link (the network crate's cluster code) tells a shard and
//! asks of it. Kept off [`ShardHandle`] so the embedder's API holds only embedder calls.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use fanfare_proto::Start;

use crate::cluster::{NodeKey, Replay, SharedView, Upstream};
use crate::ids::{SubId, TopicKey};
use crate::message::{
    Message, PublishError, PublishMeta, Published, SubscribeAccepted, SubscribeError,
};
use crate::presence::{
    PresenceDelta, PresenceEvent, PresenceOptions, PresenceQuery, PresenceState,
};
use crate::shard::disk::FetchCallback;
use crate::shard::handle::{publish, query, ShardHandle};
use crate::shard::local::Home;
use crate::sink::Sink;
use std::future::Future;

/// The cluster-facing calls of one shard. Not `Send`, like the [`ShardHandle`] it comes from.
#[derive(Clone)]
pub struct ClusterPort {
    shard: ShardHandle,
}

impl ClusterPort {
    /// The port of the shard `shard` is a handle to.
    pub fn of(shard: &ShardHandle) -> Self {
        Self {
            shard: shard.clone(),
        }
    }

    /// The shard's handle.
    pub fn shard(&self) -> &ShardHandle {
        &self.shard
    }

    /// Joins this shard to a cluster: `upstream` reaches the storage nodes.
    pub fn set_upstream(&self, upstream: Rc<dyn Upstream>) {
        self.shard.state.borrow_mut().up.set_link(upstream);
    }

    /// Takes a new view of the live storage nodes; topics whose owner changed move (their
    /// subscribers get one discontinuity when the epoch differs).
    pub fn set_view(&self, view: SharedView) {
        self.shard.state.borrow_mut().set_view(view, Instant::now());
    }

    /// The link to `node` is (back) up: asks again for every subscriber of its topics.
    pub fn up_reset(&self, node: NodeKey) {
        self.shard.state.borrow_mut().up_reset(node, Instant::now());
    }

    /// The link to storage node `node` could not be set up: subscribers of its topics that
    /// were never answered are refused `Unavailable`; live ones wait for the link.
    pub fn up_unreachable(&self, node: NodeKey) {
        self.shard
            .state
            .borrow_mut()
            .up_unreachable(node, Instant::now());
    }

    /// A live message of `key` from `node` (ignored unless `node` is its owner).
    pub fn up_item(&self, node: NodeKey, key: &TopicKey, msg: &Message) {
        self.shard
            .state
            .borrow_mut()
            .up_item(node, key, msg, Instant::now());
    }

    /// The answer to an upstream request.
    pub fn up_reply(&self, id: u64, reply: Result<Replay, SubscribeError>) {
        self.shard
            .state
            .borrow_mut()
            .up_reply(id, reply, Instant::now());
    }

    /// Publishes on this node whatever the cluster view says (a node link's publish: the
    /// router that sent it thinks this node owns the topic).
    pub fn publish_here(
        &self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
    ) -> impl Future<Output = Result<Published, PublishError>> + 'static {
        publish(&self.shard.state, key, payload, meta, true)
    }

    /// Subscribes a node link (a router shard's interest) to a topic of this node, whatever
    /// the cluster view says. Counted in `link_subscriptions`.
    pub fn subscribe_here(
        &self,
        key: TopicKey,
        start: Start,
        sink: Rc<dyn Sink>,
    ) -> Result<SubscribeAccepted, SubscribeError> {
        self.shard.state.borrow_mut().subscribe(
            key,
            start,
            sink,
            true,
            PresenceOptions::default(),
            Instant::now(),
        )
    }

    /// What the router shard behind link subscription `sub` holds of its topic's presence
    /// changed (a reset replaces it whole). Ignored for other subscriptions.
    pub fn link_presence(&self, sub: SubId, delta: PresenceDelta) {
        self.shard
            .state
            .borrow_mut()
            .link_presence(sub, delta, Instant::now());
    }

    /// A presence event of `key` from storage node `node` (ignored unless `node` is its
    /// owner).
    pub fn up_presence_event(&self, node: NodeKey, key: &TopicKey, ev: &PresenceEvent) {
        let mut st = self.shard.state.borrow_mut();
        if st
            .local
            .topic(key)
            .is_some_and(|lt| lt.home == Home::Node(node))
        {
            st.deliver_presence(key, ev);
        }
    }

    /// A presence query answered on this node whatever the cluster view says (a node link's
    /// query: the router that sent it thinks this node owns the topic).
    pub fn presence_here(
        &self,
        key: TopicKey,
        q: PresenceQuery,
    ) -> impl Future<Output = Result<PresenceState, SubscribeError>> + 'static {
        query(&self.shard.state, key, q, true)
    }

    /// Where a subscriber of `key` on this node starting at `start` begins, with the history
    /// it gets, without subscribing. `cb` runs on this shard, in order with the topic's items
    /// reaching this shard, and must not call into the shard.
    pub fn fetch_here(
        &self,
        key: TopicKey,
        start: Start,
        cb: FetchCallback,
    ) -> Result<(), SubscribeError> {
        let mut st = self.shard.state.borrow_mut();
        if st.closing {
            return Err(SubscribeError::ShuttingDown);
        }
        st.fetch(key, start, cb, Instant::now());
        Ok(())
    }
}
