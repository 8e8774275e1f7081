//! The owner role: the topics placement gives this shard. It assigns each message the next
//! sequence in the topic's epoch, keeps the history, answers where subscribers start, and
//! sends each message once to every shard with subscribers (itself included).

use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_proto::{Durability, Start};

use crate::ids::{Epoch, Seq, ShardId, TopicKey};
use crate::message::{Message, PublishError, PublishMeta, Published, SubscribeError};
use crate::shard::disk::{Answer, Fetched, Ordered, ReplyTo};
use crate::shard::mesh::MeshMsg;
use crate::shard::position::{resolve_start, Gap, OwnerReply};
use crate::shard::state::{wall_clock_micros, OwnedTopic, State};
use crate::stats::ShardStats;

/// How often owned topics are swept for expired history and idleness.
pub(crate) const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// A topic a shard owns, as the admin view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTopicInfo {
    /// Namespace.
    pub namespace: String,
    /// Topic.
    pub topic: String,
    /// Current epoch.
    pub epoch: u64,
    /// Last sequence ordered (0: none yet in this epoch).
    pub last_seq: u64,
    /// Messages in history.
    pub history_messages: usize,
    /// Payload bytes in history.
    pub history_bytes: usize,
    /// Shards with subscribers of the topic.
    pub subscriber_shards: usize,
}

impl State {
    /// The owned topic `key`, created (in a new, larger epoch) if new; `None` at the topic
    /// limit.
    pub(crate) fn owned_topic(&mut self, key: &TopicKey) -> Option<&mut OwnedTopic> {
        use std::collections::hash_map::Entry;
        let len = self.owned.len();
        // One lookup: the entry of a known topic is the common case (every publish).
        match self.owned.entry(key.clone()) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                if len >= self.cfg.topics_per_shard_max {
                    ShardStats::inc(&self.stats.topic_limit_rejections);
                    return None;
                }
                // Epochs only grow: the wall clock in microseconds, or one more than the last.
                self.last_epoch = (self.last_epoch + 1).max(if self.cfg.epoch_base.is_some() {
                    0
                } else {
                    wall_clock_micros()
                });
                let t = e.insert(OwnedTopic::new(Epoch(self.last_epoch), Seq(1), &self.cfg));
                ShardStats::set(&self.stats.topics, len as u64 + 1);
                Some(t)
            }
        }
    }

    /// Orders a message of a topic this shard owns: the next sequence, history, and one item
    /// to each interested shard. A repeated idempotency key (same publisher, within the
    /// window) is answered with the original position and orders nothing. With a data dir
    /// the message is appended to the shard's log instead, and all of that happens once it is
    /// durable (`store.rs`): the caller hands its answer channel to
    /// [`State::answer_when_stored`]. `now` is the caller's clock reading for its batch.
    pub(crate) fn owner_publish(
        &mut self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
        now: Instant,
    ) -> Result<Ordered, PublishError> {
        debug_assert_eq!(self.owner_of(&key), self.id);
        let max = self.cfg.topics_per_shard_max;
        let (window, keys_max) = (self.cfg.idempotency_window, self.cfg.idempotency_keys_max);
        self.store_check()?;
        let durable = self.store.is_some();
        if durable {
            if let Some(k) = &meta.idempotency_key {
                // A repeat of a publish still waiting for the disk: answered with it.
                if let Some(t) = self.store_waiting_with(&key, &meta.publisher, k) {
                    ShardStats::inc(&self.stats.idempotent_repeats);
                    return Ok(Ordered::Stored(t));
                }
            }
        }
        let mut targets = std::mem::take(&mut self.scratch_shards);
        let Some(topic) = self.owned_topic(&key) else {
            self.scratch_shards = targets;
            return Err(PublishError::TopicLimit { max });
        };
        if let Some(k) = &meta.idempotency_key {
            if let Some(original) = topic.dedup.get(&meta.publisher, k, now, window) {
                self.scratch_shards = targets;
                ShardStats::inc(&self.stats.idempotent_repeats);
                return Ok(Ordered::Done(original));
            }
        }
        let msg = Message::ordered_at(
            topic.epoch,
            topic.next_seq,
            payload,
            meta.publisher.clone(),
            now,
        );
        topic.next_seq = Seq(topic.next_seq.0 + 1);
        if durable {
            topic.pending += 1;
            self.scratch_shards = targets;
            return match self.store_append(key.clone(), msg, meta.idempotency_key) {
                Ok(ticket) => Ok(Ordered::Stored(ticket)),
                Err(e) => {
                    if let Some(t) = self.owned.get_mut(&key) {
                        t.pending -= 1;
                        t.next_seq = Seq(t.next_seq.0 - 1);
                    }
                    Err(e)
                }
            };
        }
        topic.history.push(now, msg.clone());
        targets.extend_from_slice(&topic.interested);
        let published = Published {
            epoch: msg.epoch,
            seq: msg.seq,
            durability: Durability::Memory,
        };
        if let Some(k) = meta.idempotency_key {
            let evicted = topic
                .dedup
                .insert(meta.publisher, k, published, now, keys_max);
            ShardStats::add(&self.stats.idempotency_keys_evicted, evicted as u64);
        }
        ShardStats::inc(&self.stats.publishes);
        self.fan_out(&key, &msg, &targets, now);
        targets.clear();
        self.scratch_shards = targets;
        Ok(Ordered::Done(published))
    }

    /// Delivers a publish's answer wherever it goes, through the mesh included.
    pub(crate) fn answer(&mut self, a: Answer, r: Result<Published, PublishError>) {
        match a {
            Answer::Shard { to, ticket } => {
                self.send(to, MeshMsg::PublishReply { ticket, reply: r });
            }
            // The publisher went away: nobody to tell.
            Answer::Channel(tx) => {
                let _ = tx.try_send(r);
            }
            Answer::Call(f) => f(r),
        }
    }

    /// Orders a publish and sends its answer to `answer`: now, or once it is durable.
    pub(crate) fn owner_publish_to(
        &mut self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
        answer: Answer,
    ) {
        match self.owner_publish(key, payload, meta, Instant::now()) {
            Ok(Ordered::Done(p)) => self.answer(answer, Ok(p)),
            Ok(Ordered::Stored(ticket)) => self.answer_when_stored(ticket, answer),
            Err(e) => self.answer(answer, Err(e)),
        }
    }

    /// One item of an ordered message to each shard in `targets` (this one included).
    pub(crate) fn fan_out(
        &mut self,
        key: &TopicKey,
        msg: &Message,
        targets: &[ShardId],
        now: Instant,
    ) {
        for &to in targets {
            if to == self.id {
                self.deliver_live(key, msg, now);
            } else {
                self.send(
                    to,
                    MeshMsg::Item {
                        key: key.clone(),
                        msg: msg.clone(),
                    },
                );
            }
        }
    }

    /// A subscribe from shard `from`: adds its interest and answers where the subscriber
    /// starts, to `to` (at once, or after a read from disk).
    pub(crate) fn owner_subscribe(
        &mut self,
        key: &TopicKey,
        start: Start,
        from: ShardId,
        to: ReplyTo,
    ) {
        let reply = self.owner_fetch(key, start);
        if reply.is_ok() {
            if let Some(topic) = self.owned.get_mut(key) {
                if !topic.interested.contains(&from) {
                    topic.interested.push(from);
                }
            }
        }
        self.answer_owner(key, reply, to);
    }

    /// Where a subscriber starting at `start` begins, and the history it gets (the topic is
    /// created if new): from memory, or, when only the disk still holds the start, the
    /// places of the first page to read ([`Fetched::Disk`]).
    pub(crate) fn owner_fetch(
        &mut self,
        key: &TopicKey,
        start: Start,
    ) -> Result<Fetched, SubscribeError> {
        debug_assert_eq!(self.owner_of(key), self.id);
        let max = self.cfg.topics_per_shard_max;
        let Some(topic) = self.owned_topic(key) else {
            return Err(SubscribeError::TopicLimit { max });
        };
        // Messages still waiting for the disk are not there yet: a subscriber starting now
        // gets them live, once they are durable.
        let next = Seq(topic.next_seq.0 - u64::from(topic.pending));
        let in_memory = topic.history.first_seq();
        let oldest = match (topic.on_disk.first_seq(topic.epoch), in_memory) {
            (Some(d), Some(m)) => Some(d.min(m)),
            (d, m) => d.or(m),
        };
        let (mut disc, mut first) = resolve_start(topic.epoch, next, oldest, start)?;
        let memory_from = in_memory.unwrap_or(next);
        let hole = (first < memory_from)
            .then(|| topic.on_disk.hole_at(first))
            .flatten();
        if let Some(after) = hole {
            // Records lost to damage (found at start-up): one discontinuity naming exactly
            // those sequences, then on from the first intact record after them.
            let after = after.min(next);
            disc = Some(Gap {
                last_seq: disc.map_or(Seq(first.0.saturating_sub(1)), |d| d.last_seq),
                new_seq: after,
                new_epoch: topic.epoch,
            });
            first = after;
        }
        if first < memory_from {
            let locs = topic.on_disk.page(first, memory_from);
            if !locs.is_empty() {
                return Ok(Fetched::Disk {
                    epoch: topic.epoch,
                    from: first,
                    locs,
                    disc,
                });
            }
            // The index does not cover the start (it never should): told, from memory on.
            let last_seq = disc.map_or(Seq(first.0.saturating_sub(1)), |d| d.last_seq);
            return Ok(Fetched::Ready(OwnerReply {
                epoch: topic.epoch,
                start: memory_from,
                disc: Some(Gap {
                    last_seq,
                    new_seq: memory_from,
                    new_epoch: topic.epoch,
                }),
                replay: topic.history.since(memory_from).cloned().collect(),
                more: false,
            }));
        }
        Ok(Fetched::Ready(OwnerReply {
            epoch: topic.epoch,
            start: first,
            disc,
            replay: topic.history.since(first).cloned().collect(),
            more: false,
        }))
    }

    pub(crate) fn owner_uninterest(&mut self, key: &TopicKey, from: ShardId) {
        if let Some(t) = self.owned.get_mut(key) {
            t.interested.retain(|s| *s != from);
        }
        self.owner_presence_drop(key, from);
    }

    /// Drops expired history, and topics nobody wants any more (at most once per
    /// [`SWEEP_PERIOD`]).
    pub(crate) fn sweep_owned(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_PERIOD {
            return;
        }
        self.last_sweep = now;
        self.store_retention();
        let age = self.cfg.history_age_max;
        let before = self.owned.len();
        let view = self.view.clone();
        self.owned.retain(|k, t| {
            t.history.expire(now, age);
            // In a cluster, a topic this node no longer owns goes once nobody asks for it,
            // so that owning it again starts a new epoch instead of an old history.
            let moved = view
                .as_ref()
                .is_some_and(|v| v.this.is_none() || v.owner(k) != v.this);
            !(t.interested.is_empty()
                && t.roster.is_none()
                && t.pending == 0
                // Records on disk keep a topic (retention decides when they go): a storage
                // node serves them again when it owns the topic again.
                && t.on_disk.is_empty()
                && (t.history.is_empty() || moved))
        });
        let expired = before - self.owned.len();
        if expired > 0 {
            ShardStats::add(&self.stats.topics_expired, expired as u64);
            ShardStats::set(&self.stats.topics, self.owned.len() as u64);
        }
    }

    /// Topics this shard owns whose `namespace/topic` starts with `prefix`: how many match,
    /// and the first `limit` of them in name order. Walks every owned topic (for the admin
    /// view, not the data path).
    pub(crate) fn owned_info(&self, prefix: &str, limit: usize) -> (usize, Vec<OwnedTopicInfo>) {
        let mut hits: Vec<(&TopicKey, &OwnedTopic)> = self
            .owned
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .collect();
        let total = hits.len();
        if limit < hits.len() {
            hits.select_nth_unstable_by(limit, |a, b| a.0.as_str().cmp(b.0.as_str()));
            hits.truncate(limit);
        }
        hits.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let infos = hits
            .into_iter()
            .map(|(k, t)| OwnedTopicInfo {
                namespace: k.namespace().to_owned(),
                topic: k.topic().to_owned(),
                epoch: t.epoch.0,
                last_seq: t.next_seq.0.saturating_sub(1 + u64::from(t.pending)),
                history_messages: t.history.len(),
                history_bytes: t.history.bytes(),
                subscriber_shards: t.interested.len(),
            })
            .collect();
        (total, infos)
    }
}
