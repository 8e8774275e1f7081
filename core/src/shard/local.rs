//! [`LocalTopics`]: the router's data, owned by one part. This shard's subscriptions, grouped
//! by topic, the index from a subscription to its place, and the set of lagging subscribers;
//! and what changes them: subscribing, leaving, live delivery (the fan-out hot path,
//! [`LocalTopics::deliver`]), replays, lagging and catching up, heartbeats.
//!
//! Where a topic's owner is, and what is said to it, is not this part's business: its methods
//! return what the caller (the router role, `router.rs`) must tell the owner, and never send
//! anything themselves. It reads no clock: every method that needs the time takes `now`.
//!
//! Invariants (checked after every change in debug and test builds; a whole walk of the part
//! in [`LocalTopics::check_all`], run by the tick and the tests):
//! - the index names every subscription exactly once, at its place: `index[s.id] == (key, i)`
//!   if and only if `topics[key].subs[i]` is `s`;
//! - no topic is left without subscribers;
//! - a topic's `pinned` is the count of its pinned subscriptions;
//! - `lagging` is exactly the set of subscriptions whose phase is `Lagging`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use fanfare_proto::Start;

use crate::cluster::NodeKey;
use crate::ids::{Epoch, LocalTopicId, Seq, SubId, TopicKey};
use crate::message::Message;
use crate::presence::{PresenceAction, PresenceEvent, SubPresence};
use crate::shard::position::{Gap, OwnerReply};
use crate::sink::{Accept, Delivery, Offer, Sink};
use crate::stats::ShardStats;

/// How many subscribers ahead a fan-out asks a sink to load what its offer will touch: its
/// own state at twice this distance ([`Sink::prefetch`]), then what that state points to
/// ([`Sink::prefetch_queue`]). A cache miss takes about as long as serving a few subscribers.
const PREFETCH_AHEAD: usize = 4;

/// Tables at most this large are never shrunk.
const SHRINK_MIN: usize = 64;

/// Where a local topic's owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// A shard of this node (`State::owner_of`).
    Shard,
    /// Another node, reached through the [`Upstream`](crate::cluster::Upstream).
    Node(NodeKey),
    /// No storage node is alive: subscribers wait for one.
    Nowhere,
}

/// Where a local subscriber stands with its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Subscribe sent to the owner, no answer yet.
    Pending,
    /// Receiving live messages; `next` is the sequence it expects.
    Live,
    /// Its sink was full at `next`; waiting for it to drain.
    Lagging { since: Instant },
    /// Asked the owner for history from `next`.
    CatchingUp,
}

/// One subscription on this shard. Its `id` never changes (the index is keyed by it); its
/// phase changes only through [`LocalTopics`], which keeps the lagging set with it.
pub(crate) struct Subscriber {
    pub id: SubId,
    pub sink: Rc<dyn Sink>,
    phase: Phase,
    pub epoch: Epoch,
    pub next: Seq,
    /// Where it asked to start (used while `Pending`, to ask again after an owner change).
    pub want: Start,
    /// Held by a node link (a router shard's interest), not by a client.
    pub pinned: bool,
    /// Its outstanding upstream request (0: none).
    pub req: u64,
    /// Its presence options and share (None: it asked for nothing; a link's subscription
    /// until its router reports).
    pub presence: Option<Box<SubPresence>>,
}

impl Subscriber {
    /// A subscription waiting for its owner's first answer.
    pub(crate) fn pending(
        id: SubId,
        sink: Rc<dyn Sink>,
        want: Start,
        pinned: bool,
        presence: Option<Box<SubPresence>>,
    ) -> Self {
        Subscriber {
            id,
            sink,
            phase: Phase::Pending,
            epoch: Epoch(0),
            next: Seq(0),
            want,
            pinned,
            req: 0,
            presence,
        }
    }

    /// Where it stands with its owner.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Where to ask its owner from again: where it first asked while still pending, else
    /// where it is.
    fn restart_point(&self) -> Start {
        if self.phase == Phase::Pending {
            self.want
        } else {
            Start::At {
                epoch: self.epoch.0,
                seq: self.next.0,
            }
        }
    }
}

/// A topic with subscribers on this shard, wherever its owner is.
pub(crate) struct LocalTopic {
    pub id: LocalTopicId,
    subs: Vec<Subscriber>,
    /// Last time an item or heartbeat went out, for heartbeats.
    pub quiet_since: Instant,
    /// Where the owner is.
    pub home: Home,
    /// For a topic owned by another node: the position its live stream has reached here.
    pub up_next: Option<(Epoch, Seq)>,
    /// Subscriptions held by node links: while there are any, the topic is served by this
    /// node whatever the view says (the routers asking think it is ours).
    pinned: usize,
}

impl LocalTopic {
    /// A topic with no subscriber yet (one is added with it).
    pub(crate) fn new(id: LocalTopicId, home: Home, now: Instant) -> Self {
        LocalTopic {
            id,
            subs: Vec::new(),
            quiet_since: now,
            home,
            up_next: None,
            pinned: 0,
        }
    }

    /// Its subscriptions.
    pub(crate) fn subs(&self) -> &[Subscriber] {
        &self.subs
    }

    /// Its subscriptions, to change what they hold (not their ids, places or phases).
    pub(crate) fn subs_mut(&mut self) -> impl Iterator<Item = &mut Subscriber> {
        self.subs.iter_mut()
    }

    /// How many of its subscriptions node links hold.
    pub(crate) fn pinned(&self) -> usize {
        self.pinned
    }
}

/// What [`LocalTopics::remove`] took away.
pub(crate) struct Removed {
    pub key: TopicKey,
    pub sub: Subscriber,
    /// Where the topic's owner was.
    pub home: Home,
    /// It was the topic's last subscription: the topic is gone too.
    pub emptied: bool,
    /// The topic's pinned subscriptions left.
    pub pinned_left: usize,
}

/// What a live message did on this shard ([`LocalTopics::deliver`]).
#[derive(Default)]
pub(crate) struct Fanned {
    /// Subscribers that found a gap before it: to catch up from the owner.
    pub gaps: Vec<SubId>,
    /// Subscribers whose sink is gone: to remove.
    pub gone: Vec<SubId>,
}

/// What an owner's answer did to its subscriber ([`LocalTopics::take_reply`]).
pub(crate) enum Replayed {
    /// Served; nothing more to do.
    Done,
    /// A page read from disk was served: ask for the next one from where it ends.
    More,
    /// Its sink is gone: to remove.
    Gone,
}

/// The router's data (see the module docs).
pub(crate) struct LocalTopics {
    topics: AHashMap<TopicKey, LocalTopic>,
    /// Where each subscription lives: its topic and its index in that topic's `subs`.
    index: AHashMap<SubId, (TopicKey, usize)>,
    lagging: AHashSet<SubId>,
    last_heartbeat_scan: Instant,
}

impl LocalTopics {
    /// No subscription yet.
    pub(crate) fn new(now: Instant) -> Self {
        LocalTopics {
            topics: AHashMap::new(),
            index: AHashMap::new(),
            lagging: AHashSet::new(),
            last_heartbeat_scan: now,
        }
    }

    /// Subscriptions on this shard.
    pub(crate) fn subscriptions(&self) -> usize {
        self.index.len()
    }

    /// The topic `key`, if it has subscribers here.
    pub(crate) fn topic(&self, key: &TopicKey) -> Option<&LocalTopic> {
        self.topics.get(key)
    }

    /// The topic `key`, to change where its owner is or its heartbeat clock.
    pub(crate) fn topic_mut(&mut self, key: &TopicKey) -> Option<&mut LocalTopic> {
        self.topics.get_mut(key)
    }

    /// The shard's own key of `namespace/topic` (joined), when it has subscribers here.
    pub(crate) fn known_key(&self, joined: &str) -> Option<&TopicKey> {
        self.topics.get_key_value(joined).map(|(k, _)| k)
    }

    /// Every topic with subscribers here.
    pub(crate) fn topics(&self) -> impl Iterator<Item = (&TopicKey, &LocalTopic)> {
        self.topics.iter()
    }

    /// The subscription `sub`.
    pub(crate) fn sub(&self, sub: SubId) -> Option<&Subscriber> {
        let (key, idx) = self.index.get(&sub)?;
        self.topics.get(key)?.subs.get(*idx)
    }

    /// The subscription `sub`, to change what it holds.
    pub(crate) fn sub_mut(&mut self, sub: SubId) -> Option<&mut Subscriber> {
        let (key, idx) = self.index.get(&sub)?;
        self.topics.get_mut(key)?.subs.get_mut(*idx)
    }

    /// The topic of subscription `sub`.
    pub(crate) fn key_of(&self, sub: SubId) -> Option<&TopicKey> {
        self.index.get(&sub).map(|(k, _)| k)
    }

    /// The subscriptions for which `pick` holds.
    pub(crate) fn select(&self, pick: impl Fn(&LocalTopic, &Subscriber) -> bool) -> Vec<SubId> {
        self.topics
            .values()
            .flat_map(|lt| lt.subs.iter().map(move |s| (lt, s)))
            .filter(|(lt, s)| pick(lt, s))
            .map(|(_, s)| s.id)
            .collect()
    }

    /// Adds `s` to `key`, making the topic with `new_topic` if it has no subscriber here yet.
    /// Returns the topic's id and where its owner was before.
    pub(crate) fn add(
        &mut self,
        key: TopicKey,
        s: Subscriber,
        new_topic: impl FnOnce() -> LocalTopic,
    ) -> (LocalTopicId, Home) {
        debug_assert!(!self.index.contains_key(&s.id), "a subscription id is new");
        debug_assert_eq!(s.phase, Phase::Pending);
        let lt = self.topics.entry(key.clone()).or_insert_with(new_topic);
        if s.pinned {
            lt.pinned += 1;
        }
        let id = s.id;
        lt.subs.push(s);
        let out = (lt.id, lt.home);
        self.index.insert(id, (key.clone(), lt.subs.len() - 1));
        self.check_topic(&key);
        out
    }

    /// Takes subscription `sub` away (and its topic, if it was the last one).
    pub(crate) fn remove(&mut self, sub: SubId) -> Option<Removed> {
        let (key, idx) = self.index.remove(&sub)?;
        self.lagging.remove(&sub);
        // The index named this topic and place (an invariant): `get_mut` and `swap_remove`
        // cannot miss.
        let lt = self.topics.get_mut(&key)?;
        let s = lt.subs.swap_remove(idx);
        if lt.subs.capacity() > 8 && lt.subs.len() * 4 < lt.subs.capacity() {
            let n = lt.subs.len() * 2;
            lt.subs.shrink_to(n);
        }
        if let Some(moved) = lt.subs.get(idx) {
            if let Some(entry) = self.index.get_mut(&moved.id) {
                entry.1 = idx;
            }
        }
        if s.pinned {
            lt.pinned -= 1;
        }
        let (home, pinned_left, emptied) = (lt.home, lt.pinned, lt.subs.is_empty());
        if emptied {
            self.topics.remove(&key);
        }
        self.check_topic(&key);
        Some(Removed {
            key,
            sub: s,
            home,
            emptied,
            pinned_left,
        })
    }

    /// Hands a live message to every subscriber of its topic that expects it. The fan-out
    /// hot path: one [`Delivery`] for all of them. Returns `None` when the topic has no
    /// subscriber here (the last one left while the message was in flight).
    pub(crate) fn deliver(
        &mut self,
        key: &TopicKey,
        msg: &Message,
        now: Instant,
        stats: &ShardStats,
    ) -> Option<Fanned> {
        let lt = self.topics.get_mut(key)?;
        lt.quiet_since = now;
        let d = Delivery::new(lt.id, msg, now);
        let mut delivered = 0u64;
        let mut out = Fanned::default();
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
                // A gap (a dropped mesh item): the caller repairs it from the owner's history.
                s.phase = Phase::CatchingUp;
                out.gaps.push(s.id);
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
                    ShardStats::inc(&stats.lagged);
                }
                Accept::Gone => out.gone.push(s.id),
            }
        }
        ShardStats::add(&stats.deliveries, delivered);
        Some(out)
    }

    /// Takes the owner's answer for `sub`: `Subscribed` first when it was pending, the
    /// discontinuity it names, then its replay, until the sink is full (lagging) or gone.
    /// `None`: `sub` is not here (it left meanwhile).
    pub(crate) fn take_reply(
        &mut self,
        sub: SubId,
        reply: &OwnerReply,
        now: Instant,
        stats: &ShardStats,
    ) -> Option<Replayed> {
        let (key, idx) = self.index.get(&sub)?;
        let lt = self.topics.get_mut(key)?;
        let topic_id = lt.id;
        let s = lt.subs.get_mut(*idx)?;
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
            ShardStats::inc(&stats.catchups);
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
            ShardStats::inc(&stats.discontinuities);
        }
        s.epoch = reply.epoch;
        s.next = reply.start;
        s.phase = Phase::Live;
        self.lagging.remove(&sub);
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
                    ShardStats::inc(&stats.lagged);
                    break;
                }
                Accept::Gone => {
                    gone = true;
                    break;
                }
            }
        }
        ShardStats::add(&stats.replayed, replayed);
        ShardStats::add(&stats.deliveries, replayed);
        // A page read from disk: the next one is asked for right away (live items are
        // skipped meanwhile; the last answer, from memory, is in order with them).
        let more = reply.more && s.phase == Phase::Live;
        self.check_sub(sub);
        Some(if gone {
            Replayed::Gone
        } else if more {
            Replayed::More
        } else {
            Replayed::Done
        })
    }

    /// Starts `sub` catching up from where it is: returns its topic and that position, for
    /// the caller to ask the owner. `None`: `sub` is not here.
    pub(crate) fn catch_up(&mut self, sub: SubId) -> Option<(TopicKey, Start)> {
        let (key, idx) = self.index.get(&sub)?;
        let s = self.topics.get_mut(key)?.subs.get_mut(*idx)?;
        s.phase = Phase::CatchingUp;
        let start = Start::At {
            epoch: s.epoch.0,
            seq: s.next.0,
        };
        let key = key.clone();
        self.lagging.remove(&sub);
        self.check_sub(sub);
        Some((key, start))
    }

    /// Whether `sub` waits for its sink to drain.
    pub(crate) fn is_lagging(&self, sub: SubId) -> bool {
        self.lagging.contains(&sub)
    }

    /// Every subscriber of `key` is to ask the owner again from where it is (after an
    /// owner change or a lost link): the topic's upstream position is forgotten and each one
    /// not still pending starts catching up. Returns where each asks from.
    pub(crate) fn restart_all(&mut self, key: &TopicKey) -> Vec<(SubId, Start)> {
        let Some(lt) = self.topics.get_mut(key) else {
            return Vec::new();
        };
        lt.up_next = None;
        let asks: Vec<(SubId, Start)> = lt
            .subs
            .iter_mut()
            .map(|s| {
                let start = s.restart_point();
                if s.phase != Phase::Pending {
                    s.phase = Phase::CatchingUp;
                }
                (s.id, start)
            })
            .collect();
        for (sub, _) in &asks {
            self.lagging.remove(sub);
        }
        self.check_topic(key);
        asks
    }

    /// Subscribers lagging for longer than `lag_max`, and for how long.
    pub(crate) fn too_slow(&self, now: Instant, lag_max: Duration) -> Vec<(SubId, Duration)> {
        self.lagging
            .iter()
            .filter_map(|sub| match self.sub(*sub)?.phase {
                Phase::Lagging { since } if now.saturating_duration_since(since) > lag_max => {
                    Some((*sub, now.saturating_duration_since(since)))
                }
                _ => None,
            })
            .collect()
    }

    /// Sends a heartbeat to every live subscriber of a topic quiet for `interval` (scanned
    /// every quarter interval). Returns how many went out.
    pub(crate) fn heartbeats(&mut self, now: Instant, interval: Duration) -> u64 {
        if now.saturating_duration_since(self.last_heartbeat_scan) < interval / 4 {
            return 0;
        }
        self.last_heartbeat_scan = now;
        let mut sent = 0;
        for lt in self.topics.values_mut() {
            if now.saturating_duration_since(lt.quiet_since) < interval {
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
        sent
    }

    /// Gives back what the maps grew to in a burst once three quarters of it is unused.
    pub(crate) fn compact(&mut self) {
        shrink_map(&mut self.index);
        shrink_map(&mut self.topics);
        if self.lagging.capacity() > SHRINK_MIN && self.lagging.len() * 4 < self.lagging.capacity()
        {
            let n = self.lagging.len() * 2;
            self.lagging.shrink_to(n);
        }
    }

    /// The invariants for one topic (see the module docs), in debug and test builds.
    fn check_topic(&self, key: &TopicKey) {
        if cfg!(debug_assertions) {
            if let Some(lt) = self.topics.get(key) {
                self.assert_topic(key, lt);
            }
        }
    }

    /// The invariants for one subscription, in debug and test builds.
    fn check_sub(&self, sub: SubId) {
        if cfg!(debug_assertions) {
            let s = self.sub(sub);
            debug_assert!(s.is_some_and(|s| s.id == sub), "the index places {sub:?}");
            debug_assert_eq!(
                s.is_some_and(|s| matches!(s.phase, Phase::Lagging { .. })),
                self.lagging.contains(&sub),
                "lagging holds exactly the lagging subscribers"
            );
        }
    }

    fn assert_topic(&self, key: &TopicKey, lt: &LocalTopic) {
        assert!(!lt.subs.is_empty(), "topic {key} has no subscriber");
        assert_eq!(
            lt.pinned,
            lt.subs.iter().filter(|s| s.pinned).count(),
            "topic {key}: pinned count"
        );
        for (i, s) in lt.subs.iter().enumerate() {
            assert_eq!(
                self.index.get(&s.id),
                Some(&(key.clone(), i)),
                "topic {key}: the index places {:?}",
                s.id
            );
            assert_eq!(
                matches!(s.phase, Phase::Lagging { .. }),
                self.lagging.contains(&s.id),
                "topic {key}: {:?} lagging",
                s.id
            );
        }
    }

    /// Every invariant of the part, by a walk of all of it (see the module docs). Panics
    /// with the one that fails. Run by the tick in debug and test builds, and by tests.
    pub(crate) fn check_all(&self) {
        let mut placed = 0;
        for (key, lt) in &self.topics {
            self.assert_topic(key, lt);
            placed += lt.subs.len();
        }
        assert_eq!(
            placed,
            self.index.len(),
            "the index names only placed subscriptions"
        );
        for sub in &self.lagging {
            assert!(
                self.index.contains_key(sub),
                "lagging {sub:?} is subscribed"
            );
        }
    }
}

/// Halves-and-more a map whose entries use under a quarter of its room (amortized: it must
/// have lost three quarters of its entries since it last grew or shrank).
pub(crate) fn shrink_map<K: std::hash::Hash + Eq, V>(m: &mut AHashMap<K, V>) {
    if m.capacity() > SHRINK_MIN && m.len() * 4 < m.capacity() {
        let n = m.len() * 2;
        m.shrink_to(n);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A sink that takes `room` items, then reports itself full.
    struct Room(Cell<usize>);

    impl Sink for Room {
        fn offer(&self, _: SubId, offer: Offer<'_>) -> Accept {
            if !matches!(offer, Offer::Item(_)) {
                return Accept::Queued;
            }
            match self.0.get() {
                0 => Accept::Full,
                n => {
                    self.0.set(n - 1);
                    Accept::Queued
                }
            }
        }
    }

    fn key(t: &str) -> TopicKey {
        TopicKey::parse("ns", t, 64).unwrap()
    }

    fn sub(topics: &mut LocalTopics, t: &str, id: u64, room: usize, pinned: bool) {
        let now = Instant::now();
        let s = Subscriber::pending(
            SubId(id),
            Rc::new(Room(Cell::new(room))),
            Start::Latest,
            pinned,
            None,
        );
        topics.add(key(t), s, || {
            LocalTopic::new(LocalTopicId(id), Home::Shard, now)
        });
    }

    fn live(topics: &mut LocalTopics, id: u64, stats: &ShardStats) {
        let reply = OwnerReply {
            epoch: Epoch(1),
            start: Seq(1),
            disc: None,
            replay: Vec::new(),
            more: false,
        };
        let r = topics.take_reply(SubId(id), &reply, Instant::now(), stats);
        assert!(matches!(r, Some(Replayed::Done)));
    }

    #[test]
    fn adds_removes_lags_and_catches_up_keeping_every_invariant() {
        let stats = ShardStats::default();
        let mut l = LocalTopics::new(Instant::now());
        for (id, t, room, pinned) in [(1, "a", 0, false), (2, "a", 5, true), (3, "b", 5, false)] {
            sub(&mut l, t, id, room, pinned);
            l.check_all();
        }
        for id in 1..=3 {
            live(&mut l, id, &stats);
        }
        let msg = Message::new(Epoch(1), Seq(1), bytes::Bytes::from_static(b"x"), None);
        let fanned = l.deliver(&key("a"), &msg, Instant::now(), &stats).unwrap();
        assert!(fanned.gaps.is_empty() && fanned.gone.is_empty());
        assert!(l.is_lagging(SubId(1)), "no room: lagging");
        assert!(!l.is_lagging(SubId(2)));
        l.check_all();
        // The first one leaves: the second moves to its place, and the index follows.
        let gone = l.remove(SubId(1)).unwrap();
        assert!(!gone.emptied && gone.pinned_left == 1);
        assert!(!l.is_lagging(SubId(1)));
        l.check_all();
        assert_eq!(l.catch_up(SubId(2)).map(|(k, _)| k), Some(key("a")));
        let gone = l.remove(SubId(2)).unwrap();
        assert!(gone.emptied && gone.pinned_left == 0);
        assert!(l.topic(&key("a")).is_none());
        assert_eq!(l.subscriptions(), 1);
        l.check_all();
    }

    #[test]
    #[should_panic(expected = "lagging")]
    fn the_check_finds_a_lagging_set_out_of_step() {
        let stats = ShardStats::default();
        let mut l = LocalTopics::new(Instant::now());
        sub(&mut l, "a", 1, 5, false);
        live(&mut l, 1, &stats);
        l.lagging.insert(SubId(1));
        l.check_all();
    }

    #[test]
    #[should_panic(expected = "index")]
    fn the_check_finds_an_index_out_of_step() {
        let mut l = LocalTopics::new(Instant::now());
        sub(&mut l, "a", 1, 5, false);
        sub(&mut l, "a", 2, 5, false);
        if let Some(e) = l.index.get_mut(&SubId(2)) {
            e.1 = 0;
        }
        l.check_all();
    }
}
