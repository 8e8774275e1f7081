//! [`OwnedTopics`]: the owner's data, owned by one part. The topics this shard orders, each
//! with its epoch, next sequence, history, idempotency keys, interested shards, presence
//! roster and disk index; the epochs handed out so far; the sweep's clock; and the topics
//! whose presence announcements wait for a rate limit.
//!
//! What orders a message is here ([`OwnedTopic::order`]); what the order is then used for
//! (the log hand-off, history, fan-out, answers) is the owner role's (`owner.rs`, `store.rs`),
//! which composes this part with the others. A replicated owner (order from a consensus log)
//! changes where `order`'s sequence comes from and when `pending` is released: this part.
//! It reads no clock: every method that needs the time takes `now`.
//!
//! Invariants (checked after every change in debug and test builds through
//! [`OwnedTopic::check`]; all topics by [`OwnedTopics::check_all`], run by the tick):
//! - every topic's epoch is at most the last epoch handed out, and epochs only grow;
//! - `next_seq >= 1`, and the `pending` messages waiting for the disk are the last ones
//!   ordered (`pending < next_seq`);
//! - history holds consecutive sequences ending right before the pending ones (its newest
//!   is `next_seq - pending - 1`), and so does the disk index (never past it);
//! - a shard is interested at most once.

use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};

use crate::config::Config;
use crate::history::History;
use crate::ids::{Epoch, Seq, ShardId, TopicKey};
use crate::presence::Roster;
use crate::shard::dedup::Dedup;
use crate::shard::disk::DiskIndex;
use crate::shard::local::shrink_map;
use crate::stats::ShardStats;

/// How often owned topics are swept for expired history and idleness.
pub(crate) const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// A topic this shard owns (orders).
pub(crate) struct OwnedTopic {
    pub epoch: Epoch,
    pub next_seq: Seq,
    pub history: History,
    /// Shards with subscribers (at most one entry per shard).
    interested: Vec<ShardId>,
    /// Recent idempotency keys and their answers.
    pub dedup: Dedup,
    /// Its presence (None while nobody is subscribed anywhere).
    pub roster: Option<Box<Roster>>,
    /// Its messages ordered and waiting for the disk (the last `pending` sequences before
    /// `next_seq`; always 0 without a data dir).
    pub pending: u32,
    /// Where its retained records are on disk (empty without a data dir).
    pub on_disk: DiskIndex,
}

impl OwnedTopic {
    /// A topic starting at `next_seq` of `epoch`, with nothing in history.
    pub(crate) fn new(epoch: Epoch, next_seq: Seq, cfg: &Config) -> Self {
        OwnedTopic {
            epoch,
            next_seq,
            history: History::new(cfg.history_messages_max, cfg.history_bytes_max),
            interested: Vec::new(),
            dedup: Dedup::default(),
            roster: None,
            pending: 0,
            on_disk: DiskIndex::default(),
        }
    }

    /// Starts the topic over at `next_seq` of `epoch`: history, idempotency keys and disk
    /// index belong to the old epoch and go (interest and presence stay).
    pub(crate) fn restart(&mut self, epoch: Epoch, next_seq: Seq, cfg: &Config) {
        let fresh = OwnedTopic::new(epoch, next_seq, cfg);
        self.epoch = fresh.epoch;
        self.next_seq = fresh.next_seq;
        self.history = fresh.history;
        self.dedup = fresh.dedup;
        self.on_disk = fresh.on_disk;
        self.check();
    }

    /// Takes the next sequence of the topic's epoch for a new message; with `durable`, the
    /// message waits for the disk (`pending`) until [`OwnedTopic::stored`] or
    /// [`OwnedTopic::unorder`].
    pub(crate) fn order(&mut self, durable: bool) -> (Epoch, Seq) {
        let seq = self.next_seq;
        self.next_seq = Seq(seq.0 + 1);
        if durable {
            self.pending += 1;
        }
        (self.epoch, seq)
    }

    /// Gives the newest sequence back: its message was never stored, and nobody saw it
    /// (the log refused or lost its append).
    pub(crate) fn unorder(&mut self) {
        debug_assert!(
            self.pending > 0,
            "only a message waiting for the disk is given back"
        );
        self.pending = self.pending.saturating_sub(1);
        self.next_seq = Seq(self.next_seq.0.saturating_sub(1).max(1));
        self.check();
    }

    /// The oldest message waiting for the disk is durable: it is no longer pending.
    pub(crate) fn stored(&mut self) {
        debug_assert!(self.pending > 0);
        self.pending = self.pending.saturating_sub(1);
    }

    /// The next sequence a subscriber starting now gets live: messages still waiting for
    /// the disk are not there yet.
    pub(crate) fn live_next(&self) -> Seq {
        Seq(self.next_seq.0 - u64::from(self.pending))
    }

    /// Shards with subscribers.
    pub(crate) fn interested(&self) -> &[ShardId] {
        &self.interested
    }

    /// Shard `shard` has subscribers of the topic.
    pub(crate) fn add_interest(&mut self, shard: ShardId) {
        if !self.interested.contains(&shard) {
            self.interested.push(shard);
        }
    }

    /// Shard `shard` has no subscribers of the topic any more.
    pub(crate) fn drop_interest(&mut self, shard: ShardId) {
        self.interested.retain(|s| *s != shard);
    }

    /// Whether nothing keeps the topic: no interest, presence, pending message or record on
    /// disk, and no history (or, with `moved`, history of a topic this node no longer owns).
    fn idle(&self, moved: bool) -> bool {
        self.interested.is_empty()
            && self.roster.is_none()
            && self.pending == 0
            // Records on disk keep a topic (retention decides when they go): a storage node
            // serves them again when it owns the topic again.
            && self.on_disk.is_empty()
            && (self.history.is_empty() || moved)
    }

    /// The topic's invariants (see the module docs), in debug and test builds.
    pub(crate) fn check(&self) {
        if cfg!(debug_assertions) {
            self.assert_invariants();
        }
    }

    fn assert_invariants(&self) {
        assert!(self.next_seq.0 >= 1, "next_seq starts at 1");
        assert!(
            u64::from(self.pending) < self.next_seq.0,
            "pending {} of next {}",
            self.pending,
            self.next_seq.0
        );
        let newest = self.live_next().0 - 1;
        if let Some(last) = self.history.last_seq() {
            assert_eq!(
                last.0, newest,
                "history ends right before the pending messages"
            );
        }
        if let Some(first) = self.on_disk.first_seq(self.epoch) {
            let indexed = first.0 + self.on_disk.len() as u64;
            assert!(
                indexed <= newest + 1,
                "the disk index ends at {} past the newest ordered {newest}",
                indexed - 1
            );
        }
        for (i, s) in self.interested.iter().enumerate() {
            assert!(
                !self.interested[..i].contains(s),
                "shard {s:?} interested twice"
            );
        }
    }
}

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

/// The owner's data (see the module docs).
pub(crate) struct OwnedTopics {
    topics: AHashMap<TopicKey, OwnedTopic>,
    /// The last epoch handed out: epochs only grow.
    last_epoch: u64,
    /// Epochs come from `last_epoch` alone (configured `epoch_base`), not the wall clock.
    fixed_epochs: bool,
    last_sweep: Instant,
    /// Topics with presence announcements held back by a rate limit.
    presence_pending: AHashSet<TopicKey>,
}

impl OwnedTopics {
    /// No topic yet; epochs start after `epoch_base` (the wall clock in microseconds, or the
    /// configured base).
    pub(crate) fn new(epoch_base: u64, fixed_epochs: bool, now: Instant) -> Self {
        OwnedTopics {
            topics: AHashMap::new(),
            last_epoch: epoch_base.saturating_sub(1),
            fixed_epochs,
            last_sweep: now,
            presence_pending: AHashSet::new(),
        }
    }

    /// How many topics this shard owns.
    pub(crate) fn len(&self) -> usize {
        self.topics.len()
    }

    /// The topic `key`, if owned here.
    pub(crate) fn get(&self, key: &TopicKey) -> Option<&OwnedTopic> {
        self.topics.get(key)
    }

    /// The topic `key`, if owned here, to change it.
    pub(crate) fn get_mut(&mut self, key: &TopicKey) -> Option<&mut OwnedTopic> {
        self.topics.get_mut(key)
    }

    /// The shard's own key of `namespace/topic` (joined), when it owns the topic.
    pub(crate) fn known_key(&self, joined: &str) -> Option<&TopicKey> {
        self.topics.get_key_value(joined).map(|(k, _)| k)
    }

    /// Every owned topic.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TopicKey, &OwnedTopic)> {
        self.topics.iter()
    }

    /// Every owned topic, to change it (retention).
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut OwnedTopic> {
        self.topics.values_mut()
    }

    /// The owned topic `key`, created (in a new, larger epoch) if new; `None` at the topic
    /// limit (`topics_per_shard_max`, counted in `topic_limit_rejections`). `wall_clock_us` is
    /// read only for a new topic.
    pub(crate) fn get_or_create(
        &mut self,
        key: &TopicKey,
        cfg: &Config,
        stats: &ShardStats,
        wall_clock_us: impl FnOnce() -> u64,
    ) -> Option<&mut OwnedTopic> {
        use std::collections::hash_map::Entry;
        let len = self.topics.len();
        // One lookup: the entry of a known topic is the common case (every publish).
        match self.topics.entry(key.clone()) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                if len >= cfg.topics_per_shard_max {
                    ShardStats::inc(&stats.topic_limit_rejections);
                    return None;
                }
                // Epochs only grow: the wall clock in microseconds, or one more than the last.
                let clock = if self.fixed_epochs {
                    0
                } else {
                    wall_clock_us()
                };
                self.last_epoch = (self.last_epoch + 1).max(clock);
                ShardStats::set(&stats.topics, len as u64 + 1);
                Some(e.insert(OwnedTopic::new(Epoch(self.last_epoch), Seq(1), cfg)))
            }
        }
    }

    /// The topic a record read back at start-up belongs to: created at its `(epoch, seq)` if
    /// new. Epochs handed out later are larger than `epoch`.
    pub(crate) fn recovered(
        &mut self,
        key: &TopicKey,
        epoch: Epoch,
        seq: Seq,
        cfg: &Config,
    ) -> &mut OwnedTopic {
        self.last_epoch = self.last_epoch.max(epoch.0);
        self.topics
            .entry(key.clone())
            .or_insert_with(|| OwnedTopic::new(epoch, seq, cfg))
    }

    /// Starts `key` over in a new epoch (damage may have taken its newest messages); created
    /// if unknown. Returns its old and new epoch.
    pub(crate) fn renew(&mut self, key: &TopicKey, cfg: &Config) -> (Epoch, Epoch) {
        self.last_epoch += 1;
        let epoch = Epoch(self.last_epoch);
        let t = self
            .topics
            .entry(key.clone())
            .or_insert_with(|| OwnedTopic::new(epoch, Seq(1), cfg));
        let old = t.epoch;
        t.restart(epoch, Seq(1), cfg);
        (old, epoch)
    }

    /// Whether a sweep is due (at most once per [`SWEEP_PERIOD`]); if so, the clock restarts.
    pub(crate) fn sweep_due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_PERIOD {
            return false;
        }
        self.last_sweep = now;
        true
    }

    /// Drops history older than `age`, and topics nothing keeps ([`OwnedTopic::idle`];
    /// `moved`: a topic this node no longer owns, which goes once nobody asks for it, so that
    /// owning it again starts a new epoch instead of an old history). Returns how many went.
    pub(crate) fn sweep(
        &mut self,
        now: Instant,
        age: Duration,
        moved: impl Fn(&TopicKey) -> bool,
    ) -> usize {
        let before = self.topics.len();
        self.topics.retain(|k, t| {
            t.history.expire(now, age);
            !t.idle(moved(k))
        });
        before - self.topics.len()
    }

    /// Topics whose `namespace/topic` starts with `prefix`: how many match, and the first
    /// `limit` of them in name order. Walks every owned topic (for the admin view).
    pub(crate) fn info(&self, prefix: &str, limit: usize) -> (usize, Vec<OwnedTopicInfo>) {
        let mut hits: Vec<(&TopicKey, &OwnedTopic)> = self
            .topics
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
                last_seq: t.live_next().0.saturating_sub(1),
                history_messages: t.history.len(),
                history_bytes: t.history.bytes(),
                subscriber_shards: t.interested.len(),
            })
            .collect();
        (total, infos)
    }

    /// Remembers that `key` holds presence announcements back (rate limits).
    pub(crate) fn hold_presence(&mut self, key: &TopicKey) {
        self.presence_pending.insert(key.clone());
    }

    /// Takes the topics holding presence announcements back.
    pub(crate) fn take_held_presence(&mut self) -> Vec<TopicKey> {
        self.presence_pending.drain().collect()
    }

    /// Gives back what the map grew to in a burst once three quarters of it is unused.
    pub(crate) fn compact(&mut self) {
        shrink_map(&mut self.topics);
    }

    /// Every invariant of every owned topic (see the module docs). Panics with the one that
    /// fails. Run by the tick in debug and test builds, and by tests.
    pub(crate) fn check_all(&self) {
        for (k, t) in &self.topics {
            assert!(
                t.epoch.0 <= self.last_epoch,
                "topic {k}: epoch {} past the last handed out {}",
                t.epoch.0,
                self.last_epoch
            );
            t.assert_invariants();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::Message;

    fn key() -> TopicKey {
        TopicKey::parse("ns", "t", 64).unwrap()
    }

    #[test]
    fn ordering_storing_and_giving_back_keep_every_invariant() {
        let cfg = Config::default();
        let stats = ShardStats::default();
        let now = Instant::now();
        let mut o = OwnedTopics::new(100, true, now);
        let t = o.get_or_create(&key(), &cfg, &stats, || 0).unwrap();
        assert_eq!(t.epoch, Epoch(100));
        // In memory: ordered and in history at once.
        let (e, s) = t.order(false);
        t.history.push(now, Message::new(e, s, Bytes::new(), None));
        t.check();
        // Durable: two wait for the disk, the newest is given back, the other is stored.
        let (e, s) = t.order(true);
        t.order(true);
        assert_eq!(t.live_next(), Seq(2));
        t.unorder();
        t.stored();
        t.history.push(now, Message::new(e, s, Bytes::new(), None));
        t.check();
        t.add_interest(ShardId(1));
        t.add_interest(ShardId(1));
        assert_eq!(t.interested(), &[ShardId(1)]);
        o.check_all();
        let (old, new) = o.renew(&key(), &cfg);
        assert!(new > old);
        o.check_all();
        assert_eq!(o.info("ns/", 10).1[0].last_seq, 0);
    }

    #[test]
    #[should_panic(expected = "history ends right before the pending messages")]
    fn the_check_finds_history_past_what_was_ordered() {
        let cfg = Config::default();
        let stats = ShardStats::default();
        let now = Instant::now();
        let mut o = OwnedTopics::new(100, true, now);
        let t = o.get_or_create(&key(), &cfg, &stats, || 0).unwrap();
        t.history
            .push(now, Message::new(Epoch(100), Seq(1), Bytes::new(), None));
        o.check_all();
    }
}
