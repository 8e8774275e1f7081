//! The owner role: the topics placement gives this shard. It assigns each message the next
//! sequence in the topic's epoch, keeps the history, answers where subscribers start, and
//! sends each message once to every shard with subscribers (itself included).

use std::time::Instant;

use bytes::Bytes;
use fanfare_proto::{Durability, Start};

use crate::ids::{Seq, ShardId, TopicKey};
use crate::message::{Message, PublishError, PublishMeta, Published, SubscribeError};
use crate::shard::disk::{Answer, Fetched, Ordered, ReplyTo};
use crate::shard::mesh::MeshMsg;
use crate::shard::owned::OwnedTopic;
use crate::shard::position::{resolve_start, Gap, OwnerReply};
use crate::shard::state::{wall_clock_micros, State};
use crate::stats::ShardStats;

impl State {
    /// The owned topic `key`, created (in a new, larger epoch) if new; `None` at the topic
    /// limit.
    pub(crate) fn owned_topic(&mut self, key: &TopicKey) -> Option<&mut OwnedTopic> {
        self.owned
            .get_or_create(key, &self.cfg, &self.stats, wall_clock_micros)
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
        let topic = self
            .owned
            .get_or_create(&key, &self.cfg, &self.stats, wall_clock_micros);
        let Some(topic) = topic else {
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
        let (epoch, seq) = topic.order(durable);
        let msg = Message::ordered_at(epoch, seq, payload, meta.publisher.clone(), now);
        if durable {
            self.scratch_shards = targets;
            return match self.store_append(key.clone(), msg, meta.idempotency_key) {
                Ok(ticket) => Ok(Ordered::Stored(ticket)),
                Err(e) => {
                    if let Some(t) = self.owned.get_mut(&key) {
                        t.unorder();
                    }
                    Err(e)
                }
            };
        }
        topic.history.push(now, msg.clone());
        targets.extend_from_slice(topic.interested());
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
        topic.check();
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
            // Run once the state is no longer borrowed (`with_state`).
            Answer::Call(f) => self.complete(f, r),
        }
    }

    /// Orders a publish and sends its answer to `answer`: now, or once it is durable.
    pub(crate) fn owner_publish_to(
        &mut self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
        answer: Answer,
        now: Instant,
    ) {
        match self.owner_publish(key, payload, meta, now) {
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
        now: Instant,
    ) {
        let reply = self.owner_fetch(key, start);
        if reply.is_ok() {
            if let Some(topic) = self.owned.get_mut(key) {
                topic.add_interest(from);
            }
        }
        self.answer_owner(key, reply, to, now);
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
        let next = topic.live_next();
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

    pub(crate) fn owner_uninterest(&mut self, key: &TopicKey, from: ShardId, now: Instant) {
        if let Some(t) = self.owned.get_mut(key) {
            t.drop_interest(from);
        }
        self.owner_presence_drop(key, from, now);
    }

    /// Drops expired history, and topics nobody wants any more (at most once per
    /// [`SWEEP_PERIOD`](crate::shard::owned::SWEEP_PERIOD)); retention of the log.
    pub(crate) fn sweep_owned(&mut self, now: Instant) {
        if !self.owned.sweep_due(now) {
            return;
        }
        self.store_retention();
        let up = &self.up;
        let expired = self
            .owned
            .sweep(now, self.cfg.history_age_max, |k| up.moved(k));
        if expired > 0 {
            ShardStats::add(&self.stats.topics_expired, expired as u64);
            ShardStats::set(&self.stats.topics, self.owned.len() as u64);
        }
    }
}
