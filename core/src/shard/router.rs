//! The router role: this shard's subscribers, wherever their topics' owners are. It keeps one
//! interest per topic at the owner however many local subscribers there are, hands each
//! message to them through their [`Sink`]s (the fan-out hot path, [`State::deliver_live`]),
//! and runs the slow-subscriber states (lagging, catching up, too slow).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_proto::Start;

use crate::cluster::UpReq;
use crate::ids::{Epoch, LocalTopicId, Seq, ShardId, SubId, TopicKey};
use crate::message::{
    CloseReason, Message, PublishError, PublishMeta, Published, SubscribeAccepted, SubscribeError,
};
use crate::presence::{PresenceAction, PresenceEvent, PresenceOptions};
use crate::shard::disk::{Answer, Ordered, ReplyTo};
use crate::shard::mesh::MeshMsg;
use crate::shard::position::{Gap, OwnerReply};
use crate::shard::state::{Home, LocalTopic, Phase, State, Subscriber};
use crate::sink::{Accept, Delivery, Offer, Sink};
use crate::stats::ShardStats;

/// How many subscribers ahead a fan-out asks a sink to load what its offer will touch: its
/// own state at twice this distance ([`Sink::prefetch`]), then what that state points to
/// ([`Sink::prefetch_queue`]). A cache miss takes about as long as serving a few subscribers.
const PREFETCH_AHEAD: usize = 4;

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
        let pinned =
            here || (self.view.is_some() && self.local.get(&key).is_some_and(|t| t.pinned > 0));
        match self.route(&key, pinned) {
            Home::Shard => {}
            Home::Nowhere => return Err(PublishError::Unavailable),
            Home::Node(node) => {
                let Some(up) = self.upstream.clone() else {
                    return Err(PublishError::Unavailable);
                };
                let (reply, rx) = flume::bounded(1);
                ShardStats::inc(&self.stats.upstream_publishes);
                up.send(
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
        if self.outboxes.is_closed(owner) {
            return Err(PublishError::ShuttingDown);
        }
        let ticket = self.fresh_id();
        self.publish_waiters.insert(ticket, (owner, None));
        ShardStats::inc(&self.stats.mesh_publishes);
        ShardStats::set(
            &self.stats.mesh_publishes_waiting,
            self.publish_waiters.len() as u64,
        );
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
        match self.publish_waiters.get_mut(&ticket) {
            Some((_, slot)) if slot.is_none() => *slot = Some(answer),
            // Not waiting (its owner stopped) or already attached: nothing will answer it.
            _ => self.answer(answer, Err(PublishError::ShuttingDown)),
        }
    }

    /// The owner shard's answer to a forwarded publish.
    pub(crate) fn on_publish_reply(&mut self, ticket: u64, reply: Result<Published, PublishError>) {
        let waiter = self.publish_waiters.remove(&ticket);
        ShardStats::set(
            &self.stats.mesh_publishes_waiting,
            self.publish_waiters.len() as u64,
        );
        // No answer attached: the caller dropped it (the publish still happened).
        if let Some((_, Some(answer))) = waiter {
            self.answer(answer, reply);
        }
        if self.publish_waiters.is_empty() && self.publish_waiters.capacity() > 1024 {
            self.publish_waiters.shrink_to(64);
        }
    }

    /// Shard `from` will answer nothing more: its forwarded publishes fail with
    /// `ShuttingDown`.
    pub(crate) fn fail_publish_waiters(&mut self, from: ShardId) {
        let tickets: Vec<u64> = self
            .publish_waiters
            .iter()
            .filter(|(_, (owner, _))| *owner == from)
            .map(|(t, _)| *t)
            .collect();
        for t in tickets {
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
    ) -> Result<SubscribeAccepted, SubscribeError> {
        if self.closing {
            return Err(SubscribeError::ShuttingDown);
        }
        if !self.local.contains_key(&key) && self.route(&key, pinned) == Home::Nowhere {
            return Err(SubscribeError::Unavailable);
        }
        let max = self.cfg.subscriptions_per_shard_max;
        if self.sub_index.len() >= max {
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
        let lt = self.local.entry(key.clone()).or_insert_with(|| LocalTopic {
            id: topic_id,
            subs: Vec::new(),
            quiet_since: Instant::now(),
            home,
            up_next: None,
            pinned: 0,
        });
        let was_home = lt.home;
        lt.subs.push(Subscriber {
            id: sub,
            sink,
            phase: Phase::Pending,
            epoch: Epoch(0),
            next: Seq(0),
            want: start,
            pinned,
            req: 0,
            presence,
        });
        let share = lt.subs.last().map(|s| s.share_delta()).unwrap_or_default();
        if pinned {
            lt.pinned += 1;
            ShardStats::inc(&self.stats.link_subscriptions);
        }
        let accepted = SubscribeAccepted { sub, topic: lt.id };
        self.sub_index.insert(sub, (key.clone(), lt.subs.len() - 1));
        ShardStats::set(&self.stats.subscriptions, self.sub_index.len() as u64);
        self.count_upstream_topics();
        if pinned && was_home != Home::Shard {
            // A router asks us for a topic our own clients get from elsewhere: serve it here
            // (this asks again for every subscriber, the new one included).
            self.rehome(&key, Home::Shard);
        } else {
            self.ask_owner(key.clone(), start, sub);
            self.presence_up(&key, share);
        }
        Ok(accepted)
    }

    /// Sends a subscribe (or catch-up) for `sub` to the topic's owner, or answers it here.
    pub(crate) fn ask_owner(&mut self, key: TopicKey, start: Start, sub: SubId) {
        let Some(lt) = self.local.get(&key) else {
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
                    self.on_subscribe_reply(sub, Ok(reply));
                    return;
                }
                let Some(up) = self.upstream.clone() else {
                    return;
                };
                let id = self.fresh_id();
                if let Some(s) = self.subscriber_mut(sub) {
                    let old = std::mem::replace(&mut s.req, id);
                    self.up_reqs.remove(&old);
                }
                self.up_reqs.insert(id, sub);
                ShardStats::inc(&self.stats.upstream_requests);
                up.send(node, UpReq::Request { key, start, id });
                return;
            }
        }
        let owner = self.owner_of(&key);
        if owner == self.id {
            self.owner_subscribe(&key, start, self.id, ReplyTo::Sub(sub));
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

    pub(crate) fn subscriber_mut(&mut self, sub: SubId) -> Option<&mut Subscriber> {
        let (key, idx) = self.sub_index.get(&sub)?;
        self.local.get_mut(key)?.subs.get_mut(*idx)
    }

    pub(crate) fn on_subscribe_reply(
        &mut self,
        sub: SubId,
        reply: Result<OwnerReply, SubscribeError>,
    ) {
        let Some((key, idx)) = self.sub_index.get(&sub).cloned() else {
            return; // unsubscribed meanwhile
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.remove_sub(sub, Some(CloseReason::Failed(e)));
                return;
            }
        };
        let now = Instant::now();
        let Some(lt) = self.local.get_mut(&key) else {
            return;
        };
        let topic_id = lt.id;
        let s = &mut lt.subs[idx];
        debug_assert_eq!(s.id, sub);
        if s.phase == Phase::Pending {
            let p = s.presence.as_deref_mut();
            let member = p.as_ref().and_then(|p| p.member.as_ref());
            s.sink.offer(
                sub,
                Offer::Subscribed {
                    topic: topic_id,
                    epoch: reply.epoch,
                    next_seq: reply.start,
                    member: member.map(|m| m.id),
                },
            );
            if let Some(p) = p.filter(|p| p.refused) {
                p.refused = false;
                let ev = PresenceEvent {
                    action: PresenceAction::Refused,
                    member: p.member.clone(),
                    occupancy: 0,
                    skipped: 0,
                };
                s.sink.offer(sub, Offer::Presence(&ev));
            }
        } else {
            ShardStats::inc(&self.stats.catchups);
        }
        if let Some(Gap {
            last_seq,
            new_seq,
            new_epoch,
        }) = reply.disc
        {
            s.sink.offer(
                sub,
                Offer::Discontinuity {
                    last_seq,
                    new_seq,
                    new_epoch,
                },
            );
            ShardStats::inc(&self.stats.discontinuities);
        }
        s.epoch = reply.epoch;
        s.next = reply.start;
        s.phase = Phase::Live;
        let mut gone = false;
        let mut replayed = 0;
        for m in &reply.replay {
            debug_assert_eq!(m.seq, s.next, "history is consecutive");
            match s
                .sink
                .offer(sub, Offer::Item(&Delivery::new(topic_id, m, now)))
            {
                Accept::Queued => {
                    s.next = Seq(m.seq.0 + 1);
                    replayed += 1;
                }
                Accept::Full => {
                    s.phase = Phase::Lagging { since: now };
                    self.lagging.insert(sub);
                    ShardStats::inc(&self.stats.lagged);
                    break;
                }
                Accept::Gone => {
                    gone = true;
                    break;
                }
            }
        }
        // A page read from disk: ask for the next one right away (live items are skipped
        // meanwhile; the last answer, from memory, is in order with them).
        let again = reply.more && s.phase == Phase::Live;
        ShardStats::add(&self.stats.replayed, replayed);
        ShardStats::add(&self.stats.deliveries, replayed);
        if gone {
            self.remove_sub(sub, None);
        } else if again {
            self.catch_up(sub);
        }
    }

    /// Hands a live message to every local subscriber of its topic. The fan-out hot path.
    pub(crate) fn deliver_live(&mut self, key: &TopicKey, msg: &Message, now: Instant) {
        let Some(lt) = self.local.get_mut(key) else {
            return; // our last subscriber left while the item was in flight
        };
        lt.quiet_since = now;
        let d = Delivery::new(lt.id, msg, now);
        let mut delivered = 0u64;
        let mut gaps = Vec::new();
        let mut gone = Vec::new();
        for i in 0..lt.subs.len() {
            // The subscriber a few places on is asked to load its state while this one is
            // served (each is a cache miss once there are hundreds).
            if let Some(ahead) = lt.subs.get(i + 2 * PREFETCH_AHEAD) {
                ahead.sink.prefetch();
            }
            if let Some(ahead) = lt.subs.get(i + PREFETCH_AHEAD) {
                ahead.sink.prefetch_queue();
            }
            let s = &mut lt.subs[i];
            if s.phase != Phase::Live || (msg.epoch == s.epoch && msg.seq < s.next) {
                continue;
            }
            if msg.epoch != s.epoch || msg.seq != s.next {
                // A gap (a dropped mesh item): repair from history.
                s.phase = Phase::CatchingUp;
                gaps.push(s.id);
                continue;
            }
            match s.sink.offer(s.id, Offer::Item(&d)) {
                Accept::Queued => {
                    s.next = Seq(s.next.0 + 1);
                    delivered += 1;
                }
                Accept::Full => {
                    s.phase = Phase::Lagging { since: now };
                    self.lagging.insert(s.id);
                    ShardStats::inc(&self.stats.lagged);
                }
                Accept::Gone => gone.push(s.id),
            }
        }
        ShardStats::add(&self.stats.deliveries, delivered);
        for sub in gaps {
            self.catch_up(sub);
        }
        for sub in gone {
            self.remove_sub(sub, None);
        }
    }

    pub(crate) fn catch_up(&mut self, sub: SubId) {
        let Some((key, idx)) = self.sub_index.get(&sub).cloned() else {
            return;
        };
        let Some(s) = self.local.get_mut(&key).map(|lt| &mut lt.subs[idx]) else {
            return;
        };
        s.phase = Phase::CatchingUp;
        let start = Start::At {
            epoch: s.epoch.0,
            seq: s.next.0,
        };
        self.lagging.remove(&sub);
        self.ask_owner(key, start, sub);
    }

    pub(crate) fn drained(&mut self, sub: SubId) {
        let lagging = self
            .sub_index
            .get(&sub)
            .and_then(|(key, idx)| self.local.get(key).map(|lt| lt.subs[*idx].phase))
            .is_some_and(|p| matches!(p, Phase::Lagging { .. }));
        if lagging {
            self.catch_up(sub);
        }
    }

    pub(crate) fn remove_sub(&mut self, sub: SubId, reason: Option<CloseReason>) {
        let Some((key, idx)) = self.sub_index.remove(&sub) else {
            return;
        };
        self.lagging.remove(&sub);
        ShardStats::set(&self.stats.subscriptions, self.sub_index.len() as u64);
        let Some(lt) = self.local.get_mut(&key) else {
            return;
        };
        let s = lt.subs.swap_remove(idx);
        if lt.subs.capacity() > 8 && lt.subs.len() * 4 < lt.subs.capacity() {
            let n = lt.subs.len() * 2;
            lt.subs.shrink_to(n);
        }
        if let Some(moved) = lt.subs.get(idx) {
            if let Some(entry) = self.sub_index.get_mut(&moved.id) {
                entry.1 = idx;
            }
        }
        if s.pinned {
            lt.pinned -= 1;
            ShardStats::dec(&self.stats.link_subscriptions);
        }
        let home = lt.home;
        let empty = lt.subs.is_empty();
        self.up_reqs.remove(&s.req);
        if let Some(r) = reason {
            s.sink.offer(sub, Offer::Closed(&r));
        }
        if empty {
            // The owner drops this shard's whole presence share with its interest.
            self.local.remove(&key);
            self.leave(&key, home);
            self.count_upstream_topics();
        } else if s.pinned && self.local.get(&key).is_some_and(|lt| lt.pinned == 0) {
            // The last router asking us left: our own clients follow the view again.
            self.presence_up(&key, s.removal_delta());
            let home = self.route(&key, false);
            self.rehome(&key, home);
        } else {
            self.presence_up(&key, s.removal_delta());
        }
    }

    /// Tells the owner at `home` that this shard no longer wants `key`.
    pub(crate) fn leave(&mut self, key: &TopicKey, home: Home) {
        match home {
            Home::Shard => {
                let owner = self.owner_of(key);
                if owner == self.id {
                    self.owner_uninterest(key, owner);
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
                if let Some(up) = &self.upstream {
                    up.send(node, UpReq::Drop { key: key.clone() });
                }
            }
            Home::Nowhere => {}
        }
    }

    /// Moves a local topic to the owner at `to`: leaves the old one and asks the new one for
    /// every subscriber from where it is (one discontinuity when the epoch changed).
    pub(crate) fn rehome(&mut self, key: &TopicKey, to: Home) {
        let Some(lt) = self.local.get_mut(key) else {
            return;
        };
        let from = lt.home;
        if from == to {
            return;
        }
        lt.home = to;
        ShardStats::inc(&self.stats.topics_rehomed);
        self.leave(key, from);
        self.reask(key);
        self.count_upstream_topics();
    }

    /// Asks the topic's owner again for every subscriber, from where each one is.
    pub(crate) fn reask(&mut self, key: &TopicKey) {
        let Some(lt) = self.local.get_mut(key) else {
            return;
        };
        lt.up_next = None;
        let asks: Vec<(SubId, Start)> = lt
            .subs
            .iter_mut()
            .map(|s| {
                let start = if s.phase == Phase::Pending {
                    s.want
                } else {
                    s.phase = Phase::CatchingUp;
                    Start::At {
                        epoch: s.epoch.0,
                        seq: s.next.0,
                    }
                };
                (s.id, start)
            })
            .collect();
        for (sub, start) in asks {
            self.lagging.remove(&sub);
            self.ask_owner(key.clone(), start, sub);
        }
        // The owner there holds none (or a stale) share of ours: send it whole, after the
        // requests (a storage node takes presence only for topics a link subscribes to).
        self.presence_resync(key);
    }

    /// Sends a heartbeat to every live subscriber of a topic quiet for a heartbeat interval
    /// (scanned every quarter interval).
    pub(crate) fn heartbeats(&mut self, now: Instant) {
        let hb = self.cfg.heartbeat_interval;
        if now.saturating_duration_since(self.last_heartbeat_scan) < hb / 4 {
            return;
        }
        self.last_heartbeat_scan = now;
        let mut sent = 0;
        for lt in self.local.values_mut() {
            if now.saturating_duration_since(lt.quiet_since) < hb {
                continue;
            }
            lt.quiet_since = now;
            for s in lt.subs.iter().filter(|s| s.phase == Phase::Live) {
                let hb = Offer::Heartbeat {
                    epoch: s.epoch,
                    next_seq: s.next,
                };
                if s.sink.offer(s.id, hb) == Accept::Queued {
                    sent += 1;
                }
            }
        }
        ShardStats::add(&self.stats.heartbeats, sent);
    }

    /// Closes subscribers lagging past `subscriber_lag_max` (`TooSlow`).
    pub(crate) fn enforce_lag(&mut self, now: Instant) {
        let lag_max = self.cfg.subscriber_lag_max;
        let too_slow: Vec<(SubId, Duration)> = self
            .lagging
            .iter()
            .filter_map(|sub| {
                let (key, idx) = self.sub_index.get(sub)?;
                match self.local.get(key)?.subs[*idx].phase {
                    Phase::Lagging { since } if now.saturating_duration_since(since) > lag_max => {
                        Some((*sub, now.saturating_duration_since(since)))
                    }
                    _ => None,
                }
            })
            .collect();
        for (sub, behind) in too_slow {
            ShardStats::inc(&self.stats.closed_too_slow);
            self.remove_sub(sub, Some(CloseReason::TooSlow(behind)));
        }
    }

    /// Closes every subscription (or, with `only_passive`, those whose sink does not end
    /// itself on shutdown).
    pub(crate) fn close_subs(&mut self, reason: CloseReason, only_passive: bool) {
        let subs: Vec<SubId> = self
            .local
            .values()
            .flat_map(|lt| lt.subs.iter())
            .filter(|s| !only_passive || !s.sink.drains_itself())
            .map(|s| s.id)
            .collect();
        for sub in subs {
            self.remove_sub(sub, Some(reason.clone()));
        }
    }
}
