//! The upstream role: topics whose owner is another node. A router shard keeps one live
//! stream per topic from the owning storage node (through the [`Upstream`] the network
//! crate provides), asks the owner for each subscriber's start position, and moves topics
//! when the cluster view changes. Also the storage side's `fetch`: where a subscriber of a
//! node link starts, answered by the owning shard of this node.
//!
//! [`Upstream`]: crate::cluster::Upstream

use std::time::Instant;

use fanfare_proto::Start;

use crate::cluster::{NodeKey, Replay, SharedView};
use crate::ids::{Seq, TopicKey};
use crate::message::{CloseReason, Message, SubscribeError};
use crate::shard::disk::FetchCallback;
use crate::shard::disk::ReplyTo;
use crate::shard::local::{Home, Phase};
use crate::shard::mesh::MeshMsg;
use crate::shard::position::OwnerReply;
use crate::shard::state::State;
use crate::stats::ShardStats;

impl State {
    /// Updates the gauge of topics served from other nodes (in a cluster).
    pub(crate) fn count_upstream_topics(&self) {
        if self.up.in_cluster() {
            let n = self
                .local
                .topics()
                .filter(|(_, t)| matches!(t.home, Home::Node(_)))
                .count();
            ShardStats::set(&self.stats.upstream_topics, n as u64);
        }
    }

    /// Takes a new cluster view: topics whose owner changed move to the new one.
    pub(crate) fn set_view(&mut self, view: SharedView, now: Instant) {
        self.up.set_view(view);
        let moves: Vec<(TopicKey, Home)> = self
            .local
            .topics()
            .filter_map(|(k, lt)| {
                let to = self.route(k, lt.pinned() > 0);
                (to != lt.home).then(|| (k.clone(), to))
            })
            .collect();
        for (key, to) in moves {
            self.rehome(&key, to, now);
        }
    }

    /// The link to `node` is (back) up: requests sent before may be lost, so ask again for
    /// every subscriber of its topics.
    pub(crate) fn up_reset(&mut self, node: NodeKey, now: Instant) {
        let keys: Vec<TopicKey> = self
            .local
            .topics()
            .filter(|(_, lt)| lt.home == Home::Node(node))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.reask(&key, now);
        }
    }

    /// The link to `node` could not be set up: subscribers of its topics still waiting for
    /// their first answer are refused `Unavailable` (told, not left waiting on a node that
    /// cannot be reached); subscribers already live wait for the link, which asks again for
    /// each of them from where it is.
    pub(crate) fn up_unreachable(&mut self, node: NodeKey, now: Instant) {
        let refused = self
            .local
            .select(|lt, s| lt.home == Home::Node(node) && s.phase() == Phase::Pending);
        let failed = CloseReason::Failed(SubscribeError::Unavailable);
        for sub in refused {
            self.remove_sub(sub, Some(failed.clone()), now);
        }
    }

    /// A live message of `key` from `node`.
    pub(crate) fn up_item(&mut self, node: NodeKey, key: &TopicKey, msg: &Message, now: Instant) {
        let Some(lt) = self.local.topic_mut(key) else {
            return;
        };
        if lt.home != Home::Node(node) {
            return; // in flight from an owner we left
        }
        lt.up_next = Some((msg.epoch, Seq(msg.seq.0 + 1)));
        self.deliver_live(key, msg, now);
    }

    /// The answer to upstream request `id`.
    pub(crate) fn up_reply(
        &mut self,
        id: u64,
        reply: Result<Replay, SubscribeError>,
        now: Instant,
    ) {
        let Some(sub) = self.up.answered(id) else {
            return; // superseded, or its subscriber left
        };
        if let Some(s) = self.local.sub_mut(sub) {
            s.req = 0;
        }
        self.on_subscribe_reply(sub, reply.map(OwnerReply::from), now);
    }

    /// Answers where a subscriber of `key` starting at `start` begins, from the owning shard of
    /// this node, without adding interest; `cb` runs on this shard once the owner answered, in
    /// order with the topic's items.
    pub(crate) fn fetch(&mut self, key: TopicKey, start: Start, cb: FetchCallback, now: Instant) {
        let owner = self.owner_of(&key);
        if owner == self.id {
            let r = self.owner_fetch(&key, start);
            self.answer_owner(&key, r, ReplyTo::Callback(cb), now);
        } else {
            let token = self.fresh_id();
            self.mesh.wait_fetch(token, cb);
            let from = self.id;
            self.send(
                owner,
                MeshMsg::Fetch {
                    key,
                    start,
                    from,
                    token,
                },
            );
        }
    }
}
