//! The router role: this shard's subscribers, wherever their topics' owners are. It keeps one
//! interest per topic at the owner however many local subscribers there are, hands each
//! message to them through their [`Sink`]s (the fan-out hot path, [`State::deliver_live`]),
//! and runs the slow-subscriber states (lagging, catching up, too slow).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_proto::Start;

use crate::cluster::UpReq;
use crate::ids::{LocalTopicId, ShardId, SubId, TopicKey};
use crate::message::{
    CloseReason, Message, PublishError, PublishMeta, Published, SubscribeAccepted, SubscribeError,
};
use crate::presence::PresenceOptions;
use crate::shard::disk::{Answer, Ordered, ReplyTo};
use crate::shard::local::{Home, LocalTopic, Replayed, Subscriber};
use crate::shard::mesh::MeshMsg;
use crate::shard::position::OwnerReply;
use crate::shard::state::State;
use crate::sink::{Offer, Sink};
use crate::stats::ShardStats;

/// A publish on its way: answered already (the owner is this shard), or waiting for the
/// owner's answer.
pub(crate) enum PublishStarted {
    /// Ordered here.
    Done(Published),
    /// Sent to another shard or node; the answer comes on this channel.
    Waiting(flume::Receiver<Result<Published, PublishError>>),
    /// Appended to this shard's log: answered once durable, to what the caller attaches
    /// (`State::answer_when_stored`).
    Stored(u64),
    /// Sent to the owning shard of this node: its answer comes back through the mesh, to
    /// what the caller attaches (`State::answer_when_forwarded`).
    Forwarded(u64),
}

impl State {
    /// Starts a publish of `key` from a client of this shard: ordered here when this shard
    /// owns the topic, otherwise sent to the owning shard or node. `here`: a node link's
    /// publish, ordered on this node whatever the view says.
    pub(crate) fn publish(
        &mut self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
        here: bool,
        now: Instant,
    ) -> Result<PublishStarted, PublishError> {
        if payload.len() > self.cfg.message_bytes_max {
            return Err(PublishError::TooLarge {
                len: payload.len(),
                max: self.cfg.message_bytes_max,
            });
        }
        if self.closing {
            return Err(PublishError::ShuttingDown);
        }
        // Only a cluster routes (`route` answers `Shard` without a view): a single node
        // skips the lookup.
        let pinned = here
            || (self.up.in_cluster() && self.local.topic(&key).is_some_and(|t| t.pinned() > 0));
        match self.route(&key, pinned) {
            Home::Shard => {}
            Home::Nowhere => return Err(PublishError::Unavailable),
            Home::Node(node) => {
                if !self.up.has_link() {
                    return Err(PublishError::Unavailable);
                }
                let (reply, rx) = flume::bounded(1);
                ShardStats::inc(&self.stats.upstream_publishes);
                self.up.send(
                    node,
                    UpReq::Publish {
                        key,
                        payload,
                        meta,
                        reply,
                    },
                );
                return Ok(PublishStarted::Waiting(rx));
            }
        }
        let owner = self.owner_of(&key);
        if owner == self.id {
            return match self.owner_publish(key, payload, meta, now)? {
                Ordered::Done(p) => Ok(PublishStarted::Done(p)),
                Ordered::Stored(ticket) => Ok(PublishStarted::Stored(ticket)),
            };
        }
        if self.mesh.is_closed(owner) {
            return Err(PublishError::ShuttingDown);
        }
        let ticket = self.fresh_id();
        let waiting = self.mesh.wait_publish(ticket, owner);
        ShardStats::inc(&self.stats.mesh_publishes);
        ShardStats::set(&self.stats.mesh_publishes_waiting, waiting as u64);
        let from = self.id;
        self.send(
            owner,
            MeshMsg::Publish {
                key,
                payload,
                meta,
                from,
                ticket,
            },
        );
        Ok(PublishStarted::Forwarded(ticket))
    }

    /// Sends the answer to the forwarded publish `ticket` ([`PublishStarted::Forwarded`]) to
    /// `answer` once its owner shard answers.
    pub(crate) fn answer_when_forwarded(&mut self, ticket: u64, answer: Answer) {
        if let Err(answer) = self.mesh.attach(ticket, answer) {
            // Not waiting (its owner stopped) or already attached: nothing will answer it.
            self.answer(answer, Err(PublishError::ShuttingDown));
        }
    }

    /// The owner shard's answer to a forwarded publish.
    pub(crate) fn on_publish_reply(&mut self, ticket: u64, reply: Result<Published, PublishError>) {
        let (answer, waiting) = self.mesh.answered(ticket);
        ShardStats::set(&self.stats.mesh_publishes_waiting, waiting as u64);
        // No answer attached: the caller dropped it (the publish still happened).
        if let Some(answer) = answer {
            self.answer(answer, reply);
        }
    }

    /// Shard `from` will answer nothing more: its forwarded publishes fail with
    /// `ShuttingDown`.
    pub(crate) fn fail_publish_waiters(&mut self, from: ShardId) {
        for t in self.mesh.waiting_on(from) {
            self.on_publish_reply(t, Err(PublishError::ShuttingDown));
        }
    }

    pub(crate) fn subscribe(
        &mut self,
        key: TopicKey,
        start: Start,
        sink: Rc<dyn Sink>,
        pinned: bool,
        presence: PresenceOptions,
        now: Instant,
    ) -> Result<SubscribeAccepted, SubscribeError> {
        if self.closing {
            return Err(SubscribeError::ShuttingDown);
        }
        if self.local.topic(&key).is_none() && self.route(&key, pinned) == Home::Nowhere {
            return Err(SubscribeError::Unavailable);
        }
        let max = self.cfg.subscriptions_per_shard_max;
        if self.local.subscriptions() >= max {
            ShardStats::inc(&self.stats.subscription_limit_rejections);
            return Err(SubscribeError::TooManySubscriptions { max });
        }
        if let Some((_, info)) = &presence.enter {
            let max = self.cfg.presence_info_bytes_max;
            if info.len() > max {
                return Err(SubscribeError::PresenceInfoTooLarge {
                    len: info.len(),
                    max,
                });
            }
        }
        let presence = self.sub_presence(presence);
        let sub = SubId(self.fresh_id());
        let topic_id = LocalTopicId(self.fresh_id());
        let home = self.route(&key, pinned);
        let s = Subscriber::pending(sub, sink, start, pinned, presence);
        let share = s.share_delta();
        let (topic, was_home) = self
            .local
            .add(key.clone(), s, || LocalTopic::new(topic_id, home, now));
        if pinned {
            ShardStats::inc(&self.stats.link_subscriptions);
        }
        ShardStats::set(&self.stats.subscriptions, self.local.subscriptions() as u64);
        self.count_upstream_topics();
        if pinned && was_home != Home::Shard {
            // A router asks us for a topic our own clients get from elsewhere: serve it here
            // (this asks again for every subscriber, the new one included).
            self.rehome(&key, Home::Shard, now);
        } else {
            self.ask_owner(key.clone(), start, sub, now);
            self.presence_up(&key, share, now);
        }
        Ok(SubscribeAccepted { sub, topic })
    }

    /// Sends a subscribe (or catch-up) for `sub` to the topic's owner, or answers it here.
    pub(crate) fn ask_owner(&mut self, key: TopicKey, start: Start, sub: SubId, now: Instant) {
        let Some(lt) = self.local.topic(&key) else {
            return;
        };
        match lt.home {
            Home::Shard => {}
            Home::Nowhere => return, // asked again when a storage node appears
            Home::Node(node) => {
                if let (Start::Latest, Some((epoch, next))) = (start, lt.up_next) {
                    // The live stream is here already: start where it is, no round trip.
                    let reply = OwnerReply {
                        epoch,
                        start: next,
                        disc: None,
                        replay: Vec::new(),
                        more: false,
                    };
                    self.on_subscribe_reply(sub, Ok(reply), now);
                    return;
                }
                if !self.up.has_link() {
                    return;
                }
                let id = self.fresh_id();
                if let Some(s) = self.local.sub_mut(sub) {
                    let old = std::mem::replace(&mut s.req, id);
                    self.up.forget(old);
                }
                self.up.wait(id, sub);
                ShardStats::inc(&self.stats.upstream_requests);
                self.up.send(node, UpReq::Request { key, start, id });
                return;
            }
        }
        let owner = self.owner_of(&key);
        if owner == self.id {
            self.owner_subscribe(&key, start, self.id, ReplyTo::Sub(sub), now);
        } else {
            let from = self.id;
            self.send(
                owner,
                MeshMsg::Subscribe {
                    key,
                    start,
                    from,
                    sub,
                },
            );
        }
    }

    /// The owner's answer for subscriber `sub`: where it starts and what it gets first.
    pub(crate) fn on_subscribe_reply(
        &mut self,
        sub: SubId,
        reply: Result<OwnerReply, SubscribeError>,
        now: Instant,
    ) {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.remove_sub(sub, Some(CloseReason::Failed(e)), now);
                return;
            }
        };
        // `None`: unsubscribed meanwhile.
        match self.local.take_reply(sub, &reply, now, &self.stats) {
            None | Some(Replayed::Done) => {}
            Some(Replayed::Gone) => self.remove_sub(sub, None, now),
            Some(Replayed::More) => self.catch_up(sub, now),
        }
    }

    /// Hands a live message to every local subscriber of its topic (the fan-out hot path:
    /// [`LocalTopics::deliver`](crate::shard::local::LocalTopics::deliver), now); repairs gaps and
    /// removes subscribers that are gone.
    pub(crate) fn deliver_live(&mut self, key: &TopicKey, msg: &Message, now: Instant) {
        let Some(fanned) = self.local.deliver(key, msg, now, &self.stats) else {
            return; // our last subscriber left while the item was in flight
        };
        for sub in fanned.gaps {
            self.catch_up(sub, now);
        }
        for sub in fanned.gone {
            self.remove_sub(sub, None, now);
        }
    }

    /// Asks the owner for `sub`'s messages from where it is.
    pub(crate) fn catch_up(&mut self, sub: SubId, now: Instant) {
        if let Some((key, start)) = self.local.catch_up(sub) {
            self.ask_owner(key, start, sub, now);
        }
    }

    /// The sink of `sub` has room again: a lagging subscriber catches up.
    pub(crate) fn drained(&mut self, sub: SubId, now: Instant) {
        if self.local.is_lagging(sub) {
            self.catch_up(sub, now);
        }
    }

    pub(crate) fn remove_sub(&mut self, sub: SubId, reason: Option<CloseReason>, now: Instant) {
        let Some(gone) = self.local.remove(sub) else {
            return;
        };
        ShardStats::set(&self.stats.subscriptions, self.local.subscriptions() as u64);
        let (key, s) = (gone.key, gone.sub);
        if s.pinned {
            ShardStats::dec(&self.stats.link_subscriptions);
        }
        self.up.forget(s.req);
        if let Some(r) = reason {
            s.sink.offer(sub, Offer::Closed(&r));
        }
        if gone.emptied {
            // The owner drops this shard's whole presence share with its interest.
            self.leave(&key, gone.home, now);
            self.count_upstream_topics();
        } else if s.pinned && gone.pinned_left == 0 {
            // The last router asking us left: our own clients follow the view again.
            self.presence_up(&key, s.removal_delta(), now);
            let home = self.route(&key, false);
            self.rehome(&key, home, now);
        } else {
            self.presence_up(&key, s.removal_delta(), now);
        }
    }

    /// Tells the owner at `home` that this shard no longer wants `key`.
    pub(crate) fn leave(&mut self, key: &TopicKey, home: Home, now: Instant) {
        match home {
            Home::Shard => {
                let owner = self.owner_of(key);
                if owner == self.id {
                    self.owner_uninterest(key, owner, now);
                } else {
                    let from = self.id;
                    self.send(
                        owner,
                        MeshMsg::Uninterest {
                            key: key.clone(),
                            from,
                        },
                    );
                }
            }
            Home::Node(node) => {
                self.up.send(node, UpReq::Drop { key: key.clone() });
            }
            Home::Nowhere => {}
        }
    }

    /// Moves a local topic to the owner at `to`: leaves the old one and asks the new one for
    /// every subscriber from where it is (one discontinuity when the epoch changed).
    pub(crate) fn rehome(&mut self, key: &TopicKey, to: Home, now: Instant) {
        let Some(lt) = self.local.topic_mut(key) else {
            return;
        };
        let from = lt.home;
        if from == to {
            return;
        }
        lt.home = to;
        ShardStats::inc(&self.stats.topics_rehomed);
        self.leave(key, from, now);
        self.reask(key, now);
        self.count_upstream_topics();
    }

    /// Asks the topic's owner again for every subscriber, from where each one is.
    pub(crate) fn reask(&mut self, key: &TopicKey, now: Instant) {
        for (sub, start) in self.local.restart_all(key) {
            self.ask_owner(key.clone(), start, sub, now);
        }
        // The owner there holds none (or a stale) share of ours: send it whole, after the
        // requests (a storage node takes presence only for topics a link subscribes to).
        self.presence_resync(key, now);
    }

    /// Sends a heartbeat to every live subscriber of a topic quiet for a heartbeat interval
    /// (scanned every quarter interval).
    pub(crate) fn heartbeats(&mut self, now: Instant) {
        let sent = self.local.heartbeats(now, self.cfg.heartbeat_interval);
        ShardStats::add(&self.stats.heartbeats, sent);
    }

    /// Closes subscribers lagging past `subscriber_lag_max` (`TooSlow`).
    pub(crate) fn enforce_lag(&mut self, now: Instant) {
        let too_slow: Vec<(SubId, Duration)> =
            self.local.too_slow(now, self.cfg.subscriber_lag_max);
        for (sub, behind) in too_slow {
            ShardStats::inc(&self.stats.closed_too_slow);
            self.remove_sub(sub, Some(CloseReason::TooSlow(behind)), now);
        }
    }

    /// Closes every subscription (or, with `only_passive`, those whose sink does not end
    /// itself on shutdown).
    pub(crate) fn close_subs(&mut self, reason: CloseReason, only_passive: bool, now: Instant) {
        let subs = self
            .local
            .select(|_, s| !only_passive || !s.sink.drains_itself());
        for sub in subs {
            self.remove_sub(sub, Some(reason.clone()), now);
        }
    }
}
