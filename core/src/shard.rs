//! A shard: one executor's topics and subscriptions, and the loops that change them.
//!
//! A shard plays both roles of the design inside one node:
//! - **owner** of the topics placement gives it: it assigns sequences, keeps history, and
//!   sends each message once to every shard that has subscribers for the topic;
//! - **router** for the subscriptions made on it: it keeps one interest per (topic, shard)
//!   at the owner however many local subscribers there are, and fans each message out to
//!   them through their [`Sink`]s.
//!
//! All state lives in one [`State`] behind `Rc<RefCell<..>>`, touched only by this shard's
//! thread; a borrow is never held across an `.await`. Other shards are reached only by
//! [`MeshMsg`]s over glommio's lock-free channel mesh, through a per-peer outbox that a
//! flusher task drains in batches (one channel send carries everything queued meanwhile).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use bytes::Bytes;
use fanfare_proto::Start;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;

use crate::cluster::{NodeKey, Replay, SharedView, UpReq, Upstream};
use crate::config::Config;
use crate::history::History;
use crate::ids::{Epoch, LocalTopicId, Seq, ShardId, SubId, TopicKey};
use crate::message::{
    CloseReason, Message, Offer, PublishError, Published, SubscribeAccepted, SubscribeError,
};
use crate::placement::shard_for;
use crate::sink::{Accept, Delivery, Sink};
use crate::stats::ShardStats;

/// Most messages one mesh batch carries (bounds the time a receiver spends on one batch).
const MESH_BATCH_MAX: usize = 1024;
/// Period of the maintenance tick (heartbeats, lag limits, idle topics), at most.
const TICK_MAX: Duration = Duration::from_millis(100);
/// How often owned topics are swept for expired history and idleness.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// A message between shards.
pub(crate) enum MeshMsg {
    /// Router to owner: order this message.
    Publish {
        key: TopicKey,
        payload: Bytes,
        publisher: Option<Arc<str>>,
        reply: flume::Sender<Result<Published, PublishError>>,
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
    /// The sender stopped taking work (shutdown): everything it sent before is ahead of this.
    Fin,
}

/// Called with the answer to a fetch, on the asking shard (must not call into the shard).
pub type FetchCallback = Box<dyn FnOnce(Result<Replay, SubscribeError>)>;

/// Messages a subscriber will never get: after `last_seq` up to `new_seq - 1` (in `new_epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    last_seq: Seq,
    new_seq: Seq,
    new_epoch: Epoch,
}

/// What the owner answers a subscribe (or catch-up) with.
#[derive(Debug)]
pub(crate) struct OwnerReply {
    epoch: Epoch,
    /// The first sequence the subscriber will get.
    start: Seq,
    /// Set when the requested position is lost.
    disc: Option<Gap>,
    /// History from `start` on.
    replay: Vec<Message>,
}

impl From<OwnerReply> for Replay {
    fn from(r: OwnerReply) -> Self {
        Replay {
            epoch: r.epoch,
            start: r.start,
            gap: r.disc.map(|g| (g.last_seq, g.new_seq, g.new_epoch)),
            items: r.replay,
        }
    }
}

impl From<Replay> for OwnerReply {
    fn from(r: Replay) -> Self {
        OwnerReply {
            epoch: r.epoch,
            start: r.start,
            disc: r.gap.map(|(last_seq, new_seq, new_epoch)| Gap {
                last_seq,
                new_seq,
                new_epoch,
            }),
            replay: r.items,
        }
    }
}

/// Where a local topic's owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// A shard of this node (`owner_of`).
    Shard,
    /// Another node, reached through the [`Upstream`].
    Node(NodeKey),
    /// No storage node is alive: subscribers wait for one.
    Nowhere,
}

/// Commands from library callers on other threads.
pub(crate) enum Cmd {
    Publish {
        key: TopicKey,
        payload: Bytes,
        reply: flume::Sender<Result<Published, PublishError>>,
    },
    Subscribe {
        key: TopicKey,
        start: Start,
        sink: Box<dyn FnOnce() -> Rc<dyn Sink> + Send>,
        on_error: Box<dyn FnOnce(SubscribeError) + Send>,
    },
    Run(Box<dyn FnOnce(&ShardHandle) + Send>),
    Shutdown,
}

/// Control messages from library subscribers (at most one outstanding per subscription,
/// so the unbounded channel they travel on is bounded by the subscription count).
pub(crate) enum Ctl {
    Drained(SubId),
    Unsubscribe(SubId),
}

struct OwnedTopic {
    epoch: Epoch,
    next_seq: Seq,
    history: History,
    /// Shards with subscribers (at most one entry per shard).
    interested: Vec<ShardId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Subscribe sent to the owner, no answer yet.
    Pending,
    /// Receiving live messages; `next` is the sequence it expects.
    Live,
    /// Its sink was full at `next`; waiting for it to drain.
    Lagging { since: Instant },
    /// Asked the owner for history from `next`.
    CatchingUp,
}

struct Subscriber {
    id: SubId,
    sink: Rc<dyn Sink>,
    phase: Phase,
    epoch: Epoch,
    next: Seq,
    /// Where it asked to start (used while `Pending`, to ask again after an owner change).
    want: Start,
    /// Held by a node link (a router shard's interest), not by a client.
    pinned: bool,
    /// Its outstanding upstream request (0: none).
    req: u64,
}

struct LocalTopic {
    id: LocalTopicId,
    subs: Vec<Subscriber>,
    /// Last time an item or heartbeat went out, for heartbeats.
    quiet_since: Instant,
    /// Where the owner is.
    home: Home,
    /// For a topic owned by another node: the position its live stream has reached here.
    up_next: Option<(Epoch, Seq)>,
    /// Subscriptions held by node links: while there are any, the topic is served by this
    /// node whatever the view says (the routers asking think it is ours).
    pinned: usize,
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<MeshMsg>,
    waker: Option<Waker>,
    closed: bool,
}

/// A one-shot, shard-local signal (shutdown). Each waiting future owns one slot, so a future
/// polled a million times holds one waker, not a million (glommio counts waker clones in an
/// `i16`; piling them up overflowed it and panicked the shard).
#[derive(Default)]
pub(crate) struct Signal {
    fired: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Signal {
    fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Registers (or refreshes) the waker of the future holding `slot`.
    fn register(&self, slot: &mut Option<usize>, waker: &Waker) {
        let mut slots = self.slots.borrow_mut();
        let i = match *slot {
            Some(i) => i,
            None => {
                let i = match self.free.borrow_mut().pop() {
                    Some(i) => i,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                };
                *slot = Some(i);
                i
            }
        };
        match &mut slots[i] {
            Some(w) if w.will_wake(waker) => {}
            s => *s = Some(waker.clone()),
        }
    }

    fn release(&self, slot: usize) {
        if let Some(s) = self.slots.borrow_mut().get_mut(slot) {
            *s = None;
            self.free.borrow_mut().push(slot);
        }
    }

    /// Wakers held now (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }
}

/// Resolves when its [`Signal`] fires.
pub(crate) struct SignalWait {
    signal: Rc<Signal>,
    slot: Option<usize>,
}

impl Future for SignalWait {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let this = &mut *self;
        this.signal.register(&mut this.slot, cx.waker());
        Poll::Pending
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.signal.release(i);
        }
    }
}

/// One shard's state. See the module docs.
pub(crate) struct State {
    id: ShardId,
    shards: u16,
    cfg: Arc<Config>,
    stats: Arc<ShardStats>,
    owned: AHashMap<TopicKey, OwnedTopic>,
    last_epoch: u64,
    local: AHashMap<TopicKey, LocalTopic>,
    /// Where each subscription lives: its topic and its index in that topic's `subs`.
    sub_index: AHashMap<SubId, (TopicKey, usize)>,
    lagging: AHashSet<SubId>,
    next_id: u64,
    outboxes: Vec<Outbox>,
    scratch_shards: Vec<ShardId>,
    closing: bool,
    /// Peers whose `Fin` arrived during shutdown.
    fins: usize,
    shutdown: Rc<Signal>,
    last_heartbeat_scan: Instant,
    last_sweep: Instant,
    /// The cluster view (None: a single node owns everything).
    view: Option<SharedView>,
    /// The way to other nodes (None: a single node).
    upstream: Option<Rc<dyn Upstream>>,
    /// Fetches sent to other shards, by token.
    fetch_waiters: AHashMap<u64, FetchCallback>,
    /// Requests sent upstream, by id: the subscriber each answers (one per subscriber).
    up_reqs: AHashMap<u64, SubId>,
}

impl State {
    fn new(id: ShardId, shards: u16, cfg: Arc<Config>, stats: Arc<ShardStats>) -> Self {
        let now = Instant::now();
        let epoch_base = cfg.epoch_base.unwrap_or_else(wall_clock_micros);
        Self {
            id,
            shards,
            cfg,
            stats,
            owned: AHashMap::new(),
            last_epoch: epoch_base.saturating_sub(1),
            local: AHashMap::new(),
            sub_index: AHashMap::new(),
            lagging: AHashSet::new(),
            next_id: 1,
            outboxes: (0..shards).map(|_| Outbox::default()).collect(),
            scratch_shards: Vec::new(),
            closing: false,
            fins: 0,
            shutdown: Rc::new(Signal::default()),
            last_heartbeat_scan: now,
            last_sweep: now,
            view: None,
            upstream: None,
            fetch_waiters: AHashMap::new(),
            up_reqs: AHashMap::new(),
        }
    }

    /// Where the owner of `key` is for a topic with `pinned` link subscriptions.
    fn route(&self, key: &TopicKey, pinned: bool) -> Home {
        let Some(view) = &self.view else {
            return Home::Shard;
        };
        if pinned {
            return Home::Shard;
        }
        match view.owner(key) {
            None => Home::Nowhere,
            Some(n) if Some(n) == view.this => Home::Shard,
            Some(n) => Home::Node(n),
        }
    }

    fn owner_of(&self, key: &TopicKey) -> ShardId {
        ShardId(shard_for(key.as_str().as_bytes(), self.shards))
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---------------------------------------------------------------- mesh

    fn send(&mut self, to: ShardId, msg: MeshMsg) {
        debug_assert_ne!(to, self.id, "a shard never sends to itself over the mesh");
        let max = self.cfg.mesh_outbox_messages_max;
        let ob = &mut self.outboxes[usize::from(to.0)];
        if ob.closed {
            if let MeshMsg::Publish { reply, .. } = msg {
                let _ = reply.try_send(Err(PublishError::ShuttingDown));
            }
            return;
        }
        // Overflow rule: live items are dropped (the receiver sees the sequence gap and
        // repairs it from history); requests and replies are always queued, and they are
        // bounded by the client-facing limits that produce them.
        if ob.queue.len() >= max && matches!(msg, MeshMsg::Item { .. }) {
            ShardStats::inc(&self.stats.mesh_items_dropped);
            return;
        }
        ob.queue.push_back(msg);
        if let Some(w) = ob.waker.take() {
            w.wake();
        }
    }

    fn handle_mesh(&mut self, msg: MeshMsg) {
        match msg {
            MeshMsg::Publish {
                key,
                payload,
                publisher,
                reply,
            } => {
                let r = self.owner_publish(key, payload, publisher);
                let _ = reply.try_send(r);
            }
            MeshMsg::Subscribe {
                key,
                start,
                from,
                sub,
            } => {
                let reply = self.owner_subscribe(&key, start, from);
                self.send(from, MeshMsg::SubscribeReply { sub, reply });
            }
            MeshMsg::Uninterest { key, from } => self.owner_uninterest(&key, from),
            MeshMsg::SubscribeReply { sub, reply } => self.on_subscribe_reply(sub, reply),
            MeshMsg::Item { key, msg } => self.deliver_live(&key, &msg, Instant::now()),
            MeshMsg::Fetch {
                key,
                start,
                from,
                token,
            } => {
                let reply = self.owner_fetch(&key, start);
                self.send(from, MeshMsg::FetchReply { token, reply });
            }
            MeshMsg::FetchReply { token, reply } => {
                if let Some(cb) = self.fetch_waiters.remove(&token) {
                    cb(reply.map(Replay::from));
                }
            }
            MeshMsg::Fin => self.fins += 1,
        }
    }

    // ---------------------------------------------------------------- owner role

    fn owned_topic(&mut self, key: &TopicKey) -> Option<&mut OwnedTopic> {
        if !self.owned.contains_key(key) {
            if self.owned.len() >= self.cfg.topics_per_shard_max {
                ShardStats::inc(&self.stats.topic_limit_rejections);
                return None;
            }
            // Epochs only grow: the wall clock in microseconds, or one more than the last.
            self.last_epoch = (self.last_epoch + 1).max(if self.cfg.epoch_base.is_some() {
                0
            } else {
                wall_clock_micros()
            });
            let t = OwnedTopic {
                epoch: Epoch(self.last_epoch),
                next_seq: Seq(1),
                history: History::new(self.cfg.history_messages_max, self.cfg.history_bytes_max),
                interested: Vec::new(),
            };
            self.owned.insert(key.clone(), t);
            ShardStats::set(&self.stats.topics, self.owned.len() as u64);
        }
        self.owned.get_mut(key)
    }

    fn owner_publish(
        &mut self,
        key: TopicKey,
        payload: Bytes,
        publisher: Option<Arc<str>>,
    ) -> Result<Published, PublishError> {
        debug_assert_eq!(self.owner_of(&key), self.id);
        let max = self.cfg.topics_per_shard_max;
        let now = Instant::now();
        let mut targets = std::mem::take(&mut self.scratch_shards);
        let Some(topic) = self.owned_topic(&key) else {
            self.scratch_shards = targets;
            return Err(PublishError::TopicLimit { max });
        };
        let mut msg = Message::new(topic.epoch, topic.next_seq, payload, publisher);
        msg.published_at = now;
        topic.next_seq = Seq(topic.next_seq.0 + 1);
        topic.history.push(now, msg.clone());
        targets.extend_from_slice(&topic.interested);
        ShardStats::inc(&self.stats.publishes);
        let published = Published {
            epoch: msg.epoch,
            seq: msg.seq,
        };
        for &to in &targets {
            if to == self.id {
                self.deliver_live(&key, &msg, now);
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
        targets.clear();
        self.scratch_shards = targets;
        Ok(published)
    }

    fn owner_subscribe(
        &mut self,
        key: &TopicKey,
        start: Start,
        from: ShardId,
    ) -> Result<OwnerReply, SubscribeError> {
        let reply = self.owner_fetch(key, start)?;
        if let Some(topic) = self.owned.get_mut(key) {
            if !topic.interested.contains(&from) {
                topic.interested.push(from);
            }
        }
        Ok(reply)
    }

    /// Where a subscriber starting at `start` begins, and the history it gets (the topic is
    /// created if new).
    fn owner_fetch(&mut self, key: &TopicKey, start: Start) -> Result<OwnerReply, SubscribeError> {
        debug_assert_eq!(self.owner_of(key), self.id);
        let max = self.cfg.topics_per_shard_max;
        let Some(topic) = self.owned_topic(key) else {
            return Err(SubscribeError::TopicLimit { max });
        };
        let (disc, first) = resolve_start(
            topic.epoch,
            topic.next_seq,
            topic.history.first_seq(),
            start,
        )?;
        Ok(OwnerReply {
            epoch: topic.epoch,
            start: first,
            disc,
            replay: topic.history.since(first).cloned().collect(),
        })
    }

    fn owner_uninterest(&mut self, key: &TopicKey, from: ShardId) {
        if let Some(t) = self.owned.get_mut(key) {
            t.interested.retain(|s| *s != from);
        }
    }

    // ---------------------------------------------------------------- router role

    fn subscribe(
        &mut self,
        key: TopicKey,
        start: Start,
        sink: Rc<dyn Sink>,
        pinned: bool,
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
        });
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
            self.ask_owner(key, start, sub);
        }
        Ok(accepted)
    }

    fn count_upstream_topics(&self) {
        if self.view.is_some() {
            let n = self
                .local
                .values()
                .filter(|t| matches!(t.home, Home::Node(_)))
                .count();
            ShardStats::set(&self.stats.upstream_topics, n as u64);
        }
    }

    /// Sends a subscribe (or catch-up) for `sub` to the topic's owner, or answers it here.
    fn ask_owner(&mut self, key: TopicKey, start: Start, sub: SubId) {
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
            let reply = self.owner_subscribe(&key, start, self.id);
            self.on_subscribe_reply(sub, reply);
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

    fn subscriber_mut(&mut self, sub: SubId) -> Option<&mut Subscriber> {
        let (key, idx) = self.sub_index.get(&sub)?;
        self.local.get_mut(key)?.subs.get_mut(*idx)
    }

    fn on_subscribe_reply(&mut self, sub: SubId, reply: Result<OwnerReply, SubscribeError>) {
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
            s.sink.offer(
                sub,
                Offer::Subscribed {
                    topic: topic_id,
                    epoch: reply.epoch,
                    next_seq: reply.start,
                },
            );
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
            match s.sink.offer(sub, Offer::Item(&Delivery::new(topic_id, m))) {
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
        ShardStats::add(&self.stats.replayed, replayed);
        ShardStats::add(&self.stats.deliveries, replayed);
        if gone {
            self.remove_sub(sub, None);
        }
    }

    /// Hands a live message to every local subscriber of its topic. The fan-out hot path.
    fn deliver_live(&mut self, key: &TopicKey, msg: &Message, now: Instant) {
        let Some(lt) = self.local.get_mut(key) else {
            return; // our last subscriber left while the item was in flight
        };
        lt.quiet_since = now;
        let d = Delivery::new(lt.id, msg);
        let mut delivered = 0u64;
        let mut gaps = Vec::new();
        let mut gone = Vec::new();
        for s in lt.subs.iter_mut() {
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

    fn catch_up(&mut self, sub: SubId) {
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

    fn drained(&mut self, sub: SubId) {
        let lagging = self
            .sub_index
            .get(&sub)
            .and_then(|(key, idx)| self.local.get(key).map(|lt| lt.subs[*idx].phase))
            .is_some_and(|p| matches!(p, Phase::Lagging { .. }));
        if lagging {
            self.catch_up(sub);
        }
    }

    fn remove_sub(&mut self, sub: SubId, reason: Option<CloseReason>) {
        let Some((key, idx)) = self.sub_index.remove(&sub) else {
            return;
        };
        self.lagging.remove(&sub);
        ShardStats::set(&self.stats.subscriptions, self.sub_index.len() as u64);
        let Some(lt) = self.local.get_mut(&key) else {
            return;
        };
        let s = lt.subs.swap_remove(idx);
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
            self.local.remove(&key);
            self.leave(&key, home);
            self.count_upstream_topics();
        } else if s.pinned && self.local.get(&key).is_some_and(|lt| lt.pinned == 0) {
            // The last router asking us left: our own clients follow the view again.
            let home = self.route(&key, false);
            self.rehome(&key, home);
        }
    }

    /// Tells the owner at `home` that this shard no longer wants `key`.
    fn leave(&mut self, key: &TopicKey, home: Home) {
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
    fn rehome(&mut self, key: &TopicKey, to: Home) {
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
    fn reask(&mut self, key: &TopicKey) {
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
    }

    // ---------------------------------------------------------------- cluster

    /// Takes a new cluster view: topics whose owner changed move to the new one.
    fn set_view(&mut self, view: SharedView) {
        self.view = Some(view);
        let moves: Vec<(TopicKey, Home)> = self
            .local
            .iter()
            .filter_map(|(k, lt)| {
                let to = self.route(k, lt.pinned > 0);
                (to != lt.home).then(|| (k.clone(), to))
            })
            .collect();
        for (key, to) in moves {
            self.rehome(&key, to);
        }
    }

    /// The link to `node` is (back) up: requests sent before may be lost, so ask again for
    /// every subscriber of its topics.
    fn up_reset(&mut self, node: NodeKey) {
        let keys: Vec<TopicKey> = self
            .local
            .iter()
            .filter(|(_, lt)| lt.home == Home::Node(node))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.reask(&key);
        }
    }

    /// The link to `node` could not be set up: subscribers of its topics still waiting for
    /// their first answer are refused `Unavailable` (told, not left waiting on a node that
    /// cannot be reached); subscribers already live wait for the link, which asks again for
    /// each of them from where it is.
    fn up_unreachable(&mut self, node: NodeKey) {
        let refused: Vec<SubId> = self
            .local
            .values()
            .filter(|lt| lt.home == Home::Node(node))
            .flat_map(|lt| lt.subs.iter())
            .filter(|s| s.phase == Phase::Pending)
            .map(|s| s.id)
            .collect();
        for sub in refused {
            self.remove_sub(sub, Some(CloseReason::Failed(SubscribeError::Unavailable)));
        }
    }

    /// A live message of `key` from `node`.
    fn up_item(&mut self, node: NodeKey, key: &TopicKey, msg: &Message, now: Instant) {
        let Some(lt) = self.local.get_mut(key) else {
            return;
        };
        if lt.home != Home::Node(node) {
            return; // in flight from an owner we left
        }
        lt.up_next = Some((msg.epoch, Seq(msg.seq.0 + 1)));
        self.deliver_live(key, msg, now);
    }

    /// The answer to upstream request `id`.
    fn up_reply(&mut self, id: u64, reply: Result<Replay, SubscribeError>) {
        let Some(sub) = self.up_reqs.remove(&id) else {
            return; // superseded, or its subscriber left
        };
        if let Some(s) = self.subscriber_mut(sub) {
            s.req = 0;
        }
        self.on_subscribe_reply(sub, reply.map(OwnerReply::from));
    }

    /// Answers where a subscriber of `key` starting at `start` begins, from the owning shard of
    /// this node, without adding interest; `cb` runs on this shard once the owner answered, in
    /// order with the topic's items.
    fn fetch(&mut self, key: TopicKey, start: Start, cb: FetchCallback) {
        let owner = self.owner_of(&key);
        if owner == self.id {
            let r = self.owner_fetch(&key, start);
            cb(r.map(Replay::from));
        } else {
            let token = self.fresh_id();
            self.fetch_waiters.insert(token, cb);
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

    // ---------------------------------------------------------------- maintenance

    fn tick(&mut self, now: Instant) {
        let hb = self.cfg.heartbeat_interval;
        if now.saturating_duration_since(self.last_heartbeat_scan) >= hb / 4 {
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
        if now.saturating_duration_since(self.last_sweep) >= SWEEP_PERIOD {
            self.last_sweep = now;
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
                !(t.interested.is_empty() && (t.history.is_empty() || moved))
            });
            let expired = before - self.owned.len();
            if expired > 0 {
                ShardStats::add(&self.stats.topics_expired, expired as u64);
                ShardStats::set(&self.stats.topics, self.owned.len() as u64);
            }
        }
    }

    /// Closes every subscription (or, with `only_passive`, those whose sink does not end
    /// itself on shutdown).
    fn close_subs(&mut self, reason: CloseReason, only_passive: bool) {
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

/// Where a subscription starting at `start` begins, given the topic's `epoch`, `next` sequence
/// and oldest sequence in history: `(discontinuity, first sequence to deliver)`.
pub(crate) fn resolve_start(
    epoch: Epoch,
    next: Seq,
    first_in_history: Option<Seq>,
    start: Start,
) -> Result<(Option<Gap>, Seq), SubscribeError> {
    let available = first_in_history.unwrap_or(next);
    debug_assert!(available <= next);
    match start {
        Start::Latest => Ok((None, next)),
        Start::LastN(n) => Ok((
            None,
            Seq(next.0.saturating_sub(u64::from(n)).max(available.0)),
        )),
        Start::At { epoch: e, seq } => {
            let seq = Seq(seq.max(1));
            if Epoch(e) != epoch {
                // Another epoch: nothing the subscriber saw can be continued. Everything this
                // epoch still has follows the discontinuity.
                return Ok((
                    Some(Gap {
                        last_seq: Seq(seq.0 - 1),
                        new_seq: available,
                        new_epoch: epoch,
                    }),
                    available,
                ));
            }
            if seq > next {
                return Err(SubscribeError::InvalidResume {
                    requested: seq,
                    next,
                });
            }
            if seq >= available {
                Ok((None, seq))
            } else {
                Ok((
                    Some(Gap {
                        last_seq: Seq(seq.0 - 1),
                        new_seq: available,
                        new_epoch: epoch,
                    }),
                    available,
                ))
            }
        }
    }
}

fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}

// -------------------------------------------------------------------- the local API

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

/// A handle to the shard the caller runs on, for code inside a shard's executor (the network
/// front). Not `Send`: it is only valid on its own shard's thread.
#[derive(Clone)]
pub struct ShardHandle {
    state: Rc<RefCell<State>>,
}

impl ShardHandle {
    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.state.borrow().id
    }

    /// How many shards the node runs.
    pub fn shards(&self) -> u16 {
        self.state.borrow().shards
    }

    /// The engine configuration.
    pub fn config(&self) -> Arc<Config> {
        self.state.borrow().cfg.clone()
    }

    /// This shard's counters.
    pub fn stats(&self) -> Arc<ShardStats> {
        self.state.borrow().stats.clone()
    }

    /// Publishes `payload` to `namespace/topic`; resolves once the owner (in a cluster, the
    /// owning node) ordered it.
    pub fn publish(
        &self,
        namespace: &str,
        topic: &str,
        payload: Bytes,
        publisher: Option<Arc<str>>,
    ) -> impl Future<Output = Result<Published, PublishError>> + 'static {
        self.publish_to(namespace, topic, payload, publisher, false)
    }

    /// Publishes on this node whatever the cluster view says (a node link's publish: the
    /// router that sent it thinks this node owns the topic).
    pub fn publish_here(
        &self,
        namespace: &str,
        topic: &str,
        payload: Bytes,
        publisher: Option<Arc<str>>,
    ) -> impl Future<Output = Result<Published, PublishError>> + 'static {
        self.publish_to(namespace, topic, payload, publisher, true)
    }

    fn publish_to(
        &self,
        namespace: &str,
        topic: &str,
        payload: Bytes,
        publisher: Option<Arc<str>>,
        here: bool,
    ) -> impl Future<Output = Result<Published, PublishError>> + 'static {
        let mut st = self.state.borrow_mut();
        let outcome = (|| {
            let key = crate::broker::checked_key(&st.cfg, namespace, topic)
                .map_err(|(field, source)| PublishError::InvalidName { field, source })?;
            if payload.len() > st.cfg.message_bytes_max {
                return Err(PublishError::TooLarge {
                    len: payload.len(),
                    max: st.cfg.message_bytes_max,
                });
            }
            if st.closing {
                return Err(PublishError::ShuttingDown);
            }
            let pinned = here || st.local.get(&key).is_some_and(|t| t.pinned > 0);
            match st.route(&key, pinned) {
                Home::Shard => {}
                Home::Nowhere => return Err(PublishError::Unavailable),
                Home::Node(node) => {
                    let Some(up) = st.upstream.clone() else {
                        return Err(PublishError::Unavailable);
                    };
                    let (reply, rx) = flume::bounded(1);
                    ShardStats::inc(&st.stats.upstream_publishes);
                    up.send(
                        node,
                        UpReq::Publish {
                            key,
                            payload,
                            publisher,
                            reply,
                        },
                    );
                    return Ok(Err(rx));
                }
            }
            let owner = st.owner_of(&key);
            if owner == st.id {
                return st.owner_publish(key, payload, publisher).map(Ok);
            }
            let (reply, rx) = flume::bounded(1);
            st.send(
                owner,
                MeshMsg::Publish {
                    key,
                    payload,
                    publisher,
                    reply,
                },
            );
            Ok(Err(rx))
        })();
        drop(st);
        async move {
            match outcome? {
                Ok(p) => Ok(p),
                Err(rx) => rx
                    .recv_async()
                    .await
                    .unwrap_or(Err(PublishError::ShuttingDown)),
            }
        }
    }

    /// Subscribes `sink` to `namespace/topic` from `start`. Events follow on the sink,
    /// starting with `Subscribed` (or `Closed` if the owner refuses).
    pub fn subscribe(
        &self,
        namespace: &str,
        topic: &str,
        start: Start,
        sink: Rc<dyn Sink>,
    ) -> Result<SubscribeAccepted, SubscribeError> {
        let key = self.topic_key(namespace, topic)?;
        self.state.borrow_mut().subscribe(key, start, sink, false)
    }

    /// Subscribes a node link (a router shard's interest) to a topic of this node, whatever
    /// the cluster view says. Counted in `link_subscriptions`.
    pub fn subscribe_here(
        &self,
        namespace: &str,
        topic: &str,
        start: Start,
        sink: Rc<dyn Sink>,
    ) -> Result<SubscribeAccepted, SubscribeError> {
        let key = self.topic_key(namespace, topic)?;
        self.state.borrow_mut().subscribe(key, start, sink, true)
    }

    /// Where a subscriber of `namespace/topic` on this node starting at `start` begins, with
    /// the history it gets, without subscribing. `cb` runs on this shard, in order with the
    /// topic's items reaching this shard, and must not call into the shard.
    pub fn fetch_here(
        &self,
        namespace: &str,
        topic: &str,
        start: Start,
        cb: FetchCallback,
    ) -> Result<(), SubscribeError> {
        let key = self.topic_key(namespace, topic)?;
        let mut st = self.state.borrow_mut();
        if st.closing {
            return Err(SubscribeError::ShuttingDown);
        }
        st.fetch(key, start, cb);
        Ok(())
    }

    /// Whether the broker is shutting down.
    pub fn is_closing(&self) -> bool {
        self.state.borrow().closing
    }

    /// Joins this shard to a cluster: `upstream` reaches the storage nodes.
    pub fn set_upstream(&self, upstream: Rc<dyn Upstream>) {
        self.state.borrow_mut().upstream = Some(upstream);
    }

    /// Takes a new view of the live storage nodes; topics whose owner changed move (their
    /// subscribers get one discontinuity when the epoch differs).
    pub fn set_view(&self, view: SharedView) {
        self.state.borrow_mut().set_view(view);
    }

    /// The link to `node` is (back) up: asks again for every subscriber of its topics.
    pub fn up_reset(&self, node: NodeKey) {
        self.state.borrow_mut().up_reset(node);
    }

    /// The link to storage node `node` could not be set up: subscribers of its topics that
    /// were never answered are refused `Unavailable`; live ones wait for the link.
    pub fn up_unreachable(&self, node: NodeKey) {
        self.state.borrow_mut().up_unreachable(node);
    }

    /// A live message of `namespace/topic` from `node` (ignored unless `node` is its owner).
    pub fn up_item(&self, node: NodeKey, key: &TopicKey, msg: &Message) {
        self.state
            .borrow_mut()
            .up_item(node, key, msg, Instant::now());
    }

    /// The answer to an upstream request.
    pub fn up_reply(&self, id: u64, reply: Result<Replay, SubscribeError>) {
        self.state.borrow_mut().up_reply(id, reply);
    }

    /// A checked topic key (for node links decoding names off the wire).
    pub fn topic_key(&self, namespace: &str, topic: &str) -> Result<TopicKey, SubscribeError> {
        let st = self.state.borrow();
        crate::broker::checked_key(&st.cfg, namespace, topic)
            .map_err(|(field, source)| SubscribeError::InvalidName { field, source })
    }

    /// Ends a subscription (no `Closed` event follows).
    pub fn unsubscribe(&self, sub: SubId) {
        self.state.borrow_mut().remove_sub(sub, None);
    }

    /// Tells the engine a subscriber that refused an item (`Accept::Full`) has room again.
    pub fn drained(&self, sub: SubId) {
        self.state.borrow_mut().drained(sub);
    }

    /// Topics this shard owns whose `namespace/topic` starts with `prefix`: how many match,
    /// and the first `limit` of them in name order. Walks every owned topic (for the admin
    /// view, not the data path).
    pub fn owned_topics(&self, prefix: &str, limit: usize) -> (usize, Vec<OwnedTopicInfo>) {
        let st = self.state.borrow();
        let mut hits: Vec<(&TopicKey, &OwnedTopic)> = st
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
                last_seq: t.next_seq.0.saturating_sub(1),
                history_messages: t.history.len(),
                history_bytes: t.history.bytes(),
                subscriber_shards: t.interested.len(),
            })
            .collect();
        (total, infos)
    }

    /// Subscriptions on this shard to `namespace/topic` (0 for invalid names).
    pub fn local_subscribers(&self, namespace: &str, topic: &str) -> usize {
        let st = self.state.borrow();
        match crate::broker::checked_key(&st.cfg, namespace, topic) {
            Ok(key) => st.local.get(&key).map_or(0, |t| t.subs.len()),
            Err(_) => 0,
        }
    }

    /// Resolves when the broker starts shutting down. Cheap to poll repeatedly: the future
    /// holds one waker slot however often it is polled.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + 'static {
        SignalWait {
            signal: self.state.borrow().shutdown.clone(),
            slot: None,
        }
    }
}

// -------------------------------------------------------------------- the loops

/// A hook run on every shard once it is up (the network front spawns its listener here).
pub type ShardHook = Arc<dyn Fn(ShardHandle) + Send + Sync>;

/// What a shard reports when it is up: its thread index, mesh position and counters.
pub(crate) type StartReport = Result<(usize, ShardId, Arc<ShardStats>), String>;

pub(crate) struct Boot {
    pub thread_index: usize,
    pub shards: u16,
    pub cfg: Arc<Config>,
    pub mesh: MeshBuilder<Vec<MeshMsg>, Full>,
    pub cmd_rx: flume::Receiver<Cmd>,
    pub ctl_rx: flume::Receiver<Ctl>,
    pub report: std::sync::mpsc::Sender<StartReport>,
    pub hook: Option<ShardHook>,
}

/// How long a shard waits for its peers to join the mesh before giving up.
const MESH_JOIN_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) async fn run(boot: Boot) {
    let Boot {
        thread_index,
        shards,
        cfg,
        mesh,
        cmd_rx,
        ctl_rx,
        report,
        hook,
    } = boot;
    let joined = futures_lite::future::or(
        async { mesh.join().await.map_err(|e| e.to_string()) },
        async {
            glommio::timer::sleep(MESH_JOIN_TIMEOUT).await;
            Err("timed out joining the shard mesh (another shard failed to start)".to_owned())
        },
    )
    .await;
    let (senders, mut receivers) = match joined {
        Ok(x) => x,
        Err(e) => {
            let _ = report.send(Err(e));
            return;
        }
    };
    let id = ShardId(senders.peer_id() as u16);
    let stats = Arc::new(ShardStats::default());
    let state = Rc::new(RefCell::new(State::new(
        id,
        shards,
        cfg.clone(),
        stats.clone(),
    )));
    let senders = Rc::new(senders);

    let flushers: Vec<_> = (0..shards)
        .filter(|p| *p != id.0)
        .map(|p| glommio::spawn_local(flush_loop(state.clone(), senders.clone(), p)))
        .collect();
    let receivers: Vec<_> = receivers
        .streams()
        .into_iter()
        .map(|(_, rx)| glommio::spawn_local(recv_loop(state.clone(), rx)))
        .collect();
    glommio::spawn_local(ctl_loop(state.clone(), ctl_rx)).detach();
    let ticker = glommio::spawn_local(tick_loop(state.clone()));
    if let Some(hook) = hook {
        hook(ShardHandle {
            state: state.clone(),
        });
    }
    if report.send(Ok((thread_index, id, stats))).is_err() {
        tracing::warn!(shard = id.0, "broker start-up gave up on this shard");
    }

    // The command loop: runs until Shutdown, or until every Broker handle is gone.
    while let Ok(cmd) = cmd_rx.recv_async().await {
        let mut st = state.borrow_mut();
        match cmd {
            Cmd::Shutdown => break,
            Cmd::Publish {
                key,
                payload,
                reply,
            } => {
                let r = if st.closing {
                    Err(PublishError::ShuttingDown)
                } else {
                    st.owner_publish(key, payload, None)
                };
                let _ = reply.try_send(r);
            }
            Cmd::Subscribe {
                key,
                start,
                sink,
                on_error,
            } => {
                if let Err(e) = st.subscribe(key, start, sink(), false) {
                    on_error(e);
                }
            }
            Cmd::Run(f) => {
                drop(st);
                f(&ShardHandle {
                    state: state.clone(),
                });
            }
        }
    }
    // Later commands fail at once (their reply channels drop with the receiver).
    drop(cmd_rx);

    // Shutdown: stop taking work, let local subscribers (connections) drain, close the
    // rest, flush what other shards are owed, then wait for every peer to do the same.
    //
    // First, a barrier: every shard tells every peer it stopped taking work and waits for
    // the same word from each of them. Mesh channels keep order, so once every `Fin` is in,
    // the items of every publish acknowledged before the shutdown have reached this shard
    // and are queued on its subscribers before they are closed.
    let deadline = Instant::now() + cfg.drain_timeout;
    {
        let mut st = state.borrow_mut();
        st.closing = true;
        for peer in (0..shards).filter(|p| *p != id.0) {
            st.send(ShardId(peer), MeshMsg::Fin);
        }
    }
    while state.borrow().fins + 1 < usize::from(shards) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    {
        let mut st = state.borrow_mut();
        st.shutdown.fire();
        st.close_subs(CloseReason::ShuttingDown, true);
    }
    while !state.borrow().sub_index.is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    state
        .borrow_mut()
        .close_subs(CloseReason::ShuttingDown, false);
    {
        let mut st = state.borrow_mut();
        for ob in st.outboxes.iter_mut() {
            ob.closed = true;
            if let Some(w) = ob.waker.take() {
                w.wake();
            }
        }
    }
    for f in flushers {
        f.await;
    }
    senders.close();
    for r in receivers {
        r.await;
    }
    drop(ticker);
}

async fn flush_loop(state: Rc<RefCell<State>>, senders: Rc<Senders<Vec<MeshMsg>>>, peer: u16) {
    loop {
        let batch = std::future::poll_fn(|cx: &mut Context<'_>| {
            let mut st = state.borrow_mut();
            let ob = &mut st.outboxes[usize::from(peer)];
            if ob.queue.is_empty() {
                if ob.closed {
                    return Poll::Ready(None);
                }
                ob.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = ob.queue.len().min(MESH_BATCH_MAX);
            Poll::Ready(Some(ob.queue.drain(..n).collect::<Vec<_>>()))
        })
        .await;
        let Some(batch) = batch else { return };
        ShardStats::inc(&state.borrow().stats.mesh_batches);
        if senders.send_to(usize::from(peer), batch).await.is_err() {
            return; // the peer is gone (shutdown)
        }
    }
}

async fn recv_loop(state: Rc<RefCell<State>>, rx: ConnectedReceiver<Vec<MeshMsg>>) {
    while let Some(batch) = rx.recv().await {
        let mut st = state.borrow_mut();
        for msg in batch {
            st.handle_mesh(msg);
        }
    }
}

async fn ctl_loop(state: Rc<RefCell<State>>, rx: flume::Receiver<Ctl>) {
    while let Ok(ctl) = rx.recv_async().await {
        let mut st = state.borrow_mut();
        match ctl {
            Ctl::Drained(sub) => st.drained(sub),
            Ctl::Unsubscribe(sub) => st.remove_sub(sub, None),
        }
    }
}

async fn tick_loop(state: Rc<RefCell<State>>) {
    let period = {
        let st = state.borrow();
        (st.cfg.heartbeat_interval / 4).clamp(Duration::from_millis(1), TICK_MAX)
    };
    loop {
        glommio::timer::sleep(period).await;
        state.borrow_mut().tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, Arbitrary, Gen};
    use std::cell::RefCell;

    /// Regression: every poll of the shutdown future used to push a waker clone, and a
    /// connection's read loop polls it once per message; glommio's i16 waker count overflowed
    /// after 32,767 messages and panicked the shard.
    #[test]
    fn a_signal_future_polled_many_times_holds_one_waker() {
        let signal = Rc::new(Signal::default());
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(SignalWait {
            signal: signal.clone(),
            slot: None,
        });
        let mut b = Box::pin(SignalWait {
            signal: signal.clone(),
            slot: None,
        });
        for _ in 0..100_000 {
            assert!(a.as_mut().poll(&mut cx).is_pending());
        }
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.held(), 2);
        drop(b);
        assert_eq!(signal.held(), 1);
        // A new waiter reuses the freed slot.
        let mut c = Box::pin(SignalWait {
            signal: signal.clone(),
            slot: None,
        });
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.slots.borrow().len(), 2);
        signal.fire();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(c.as_mut().poll(&mut cx).is_ready());
        assert_eq!(signal.held(), 0);
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Ev {
        Subscribed(Seq),
        Item(Epoch, Seq),
        Disc(Seq, Seq),
        Closed,
    }

    /// A subscriber queue holding at most `cap` items.
    struct TestSink {
        cap: usize,
        q: RefCell<VecDeque<Ev>>,
    }

    impl Sink for TestSink {
        fn offer(&self, _sub: SubId, o: Offer<'_>) -> Accept {
            let mut q = self.q.borrow_mut();
            let ev = match o {
                Offer::Subscribed { next_seq, .. } => Ev::Subscribed(next_seq),
                Offer::Item(d) => {
                    if q.iter().filter(|e| matches!(e, Ev::Item(..))).count() >= self.cap {
                        return Accept::Full;
                    }
                    Ev::Item(d.message.epoch, d.message.seq)
                }
                Offer::Discontinuity {
                    last_seq, new_seq, ..
                } => Ev::Disc(last_seq, new_seq),
                Offer::Heartbeat { .. } => return Accept::Queued,
                Offer::Closed(_) => Ev::Closed,
            };
            q.push_back(ev);
            Accept::Queued
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Publish(u8),
        Subscribe(u8, u8),
        Unsubscribe(u8),
        Drain(u8),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            match u8::arbitrary(g) % 8 {
                0..=3 => Op::Publish(u8::arbitrary(g) % 3),
                4 => Op::Subscribe(u8::arbitrary(g) % 3, u8::arbitrary(g)),
                5 => Op::Unsubscribe(u8::arbitrary(g)),
                _ => Op::Drain(u8::arbitrary(g)),
            }
        }
    }

    struct Reader {
        sub: SubId,
        topic: usize,
        sink: Rc<TestSink>,
        /// Next sequence this reader must see; None until Subscribed.
        expect: Option<Seq>,
        closed: bool,
    }

    impl Reader {
        /// Reads everything queued, checking the stream; returns false on a violation.
        fn drain(&mut self) -> bool {
            let evs: Vec<Ev> = self.sink.q.borrow_mut().drain(..).collect();
            for ev in evs {
                match (ev, self.expect) {
                    (Ev::Subscribed(s), None) => self.expect = Some(s),
                    (Ev::Item(_, s), Some(e)) if s == e => self.expect = Some(Seq(s.0 + 1)),
                    // A discontinuity must start exactly where the reader is and move forward.
                    (Ev::Disc(last, new), Some(e)) if last.0 + 1 == e.0 && new > last => {
                        self.expect = Some(new)
                    }
                    // Right after Subscribed, the discontinuity's new_seq is the announced start.
                    (Ev::Disc(_, new), Some(e)) if new == e => {}
                    (Ev::Closed, _) => self.closed = true,
                    _ => return false,
                }
            }
            true
        }
    }

    fn state(shards: u16) -> State {
        let cfg = Config {
            history_messages_max: 5,
            epoch_base: Some(100),
            ..Config::default()
        };
        State::new(
            ShardId(0),
            shards,
            Arc::new(cfg),
            Arc::new(ShardStats::default()),
        )
    }

    quickcheck! {
        /// Sequences per topic are consecutive for any interleaving of operations, and every
        /// subscriber sees each message once, in order, except where a discontinuity tells it
        /// exactly what it missed; after a final drain every subscriber is at the head.
        fn subscribers_never_miss_silently(ops: Vec<Op>) -> bool {
            let mut st = state(1);
            let topics: Vec<TopicKey> = (0..3).map(|i| TopicKey::new_unchecked("ns", &format!("t{i}"))).collect();
            let mut published = [0u64; 3];
            let mut readers: Vec<Reader> = Vec::new();
            for op in ops {
                match op {
                    Op::Publish(t) => {
                        let t = usize::from(t);
                        let p = st.owner_publish(topics[t].clone(), Bytes::from_static(b"x"), None).unwrap();
                        published[t] += 1;
                        if p.seq != Seq(published[t]) || p.epoch != Epoch(100 + t as u64) && p.epoch.0 < 100 {
                            return false;
                        }
                    }
                    Op::Subscribe(t, how) => {
                        let t = usize::from(t);
                        let start = match how % 3 {
                            0 => Start::Latest,
                            1 => Start::LastN(u32::from(how % 7)),
                            _ => {
                                let epoch = st.owned.get(&topics[t]).map_or(0, |o| o.epoch.0);
                                Start::At { epoch, seq: published[t].saturating_sub(u64::from(how % 9)) + 1 }
                            }
                        };
                        let sink = Rc::new(TestSink { cap: 3, q: RefCell::new(VecDeque::new()) });
                        let acc = st.subscribe(topics[t].clone(), start, sink.clone(), false).unwrap();
                        readers.push(Reader { sub: acc.sub, topic: t, sink, expect: None, closed: false });
                    }
                    Op::Unsubscribe(i) => {
                        if !readers.is_empty() {
                            let r = readers.remove(usize::from(i) % readers.len());
                            st.remove_sub(r.sub, None);
                        }
                    }
                    Op::Drain(i) => {
                        if !readers.is_empty() {
                            let n = readers.len();
                            let r = &mut readers[usize::from(i) % n];
                            if !r.drain() {
                                return false;
                            }
                            st.drained(r.sub);
                        }
                    }
                }
            }
            // Final: drain everyone until quiet; each must reach its topic's head.
            for r in readers.iter_mut() {
                for _ in 0..100 {
                    if !r.drain() {
                        return false;
                    }
                    st.drained(r.sub);
                    if r.sink.q.borrow().is_empty() {
                        break;
                    }
                }
                if r.closed || r.expect != Some(Seq(published[r.topic] + 1)) {
                    return false;
                }
            }
            // The index and the topics agree.
            st.sub_index.len() == readers.len()
                && st.sub_index.iter().all(|(id, (k, i))| st.local[k].subs[*i].id == *id)
        }
    }

    const E: Epoch = Epoch(7);

    #[test]
    fn resolve_latest_and_last_n() {
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), Start::Latest),
            Ok((None, Seq(10)))
        );
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), Start::LastN(3)),
            Ok((None, Seq(7)))
        );
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), Start::LastN(30)),
            Ok((None, Seq(5)))
        );
        assert_eq!(
            resolve_start(E, Seq(1), None, Start::LastN(30)),
            Ok((None, Seq(1)))
        );
    }

    #[test]
    fn resolve_positions() {
        let at = |e, s| Start::At { epoch: e, seq: s };
        // Inside history: gapless.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(7, 6)),
            Ok((None, Seq(6)))
        );
        // At the head: nothing to replay.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(7, 10)),
            Ok((None, Seq(10)))
        );
        // Before history: one discontinuity, then what is left.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(7, 2)),
            Ok((
                Some(Gap {
                    last_seq: Seq(1),
                    new_seq: Seq(5),
                    new_epoch: E
                }),
                Seq(5)
            ))
        );
        // Another epoch: discontinuity into this one.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(6, 9)),
            Ok((
                Some(Gap {
                    last_seq: Seq(8),
                    new_seq: Seq(5),
                    new_epoch: E
                }),
                Seq(5)
            ))
        );
        // Ahead of the head.
        assert!(resolve_start(E, Seq(10), Some(Seq(5)), at(7, 11)).is_err());
        // Empty history after expiry.
        assert_eq!(
            resolve_start(E, Seq(10), None, at(7, 3)),
            Ok((
                Some(Gap {
                    last_seq: Seq(2),
                    new_seq: Seq(10),
                    new_epoch: E
                }),
                Seq(10)
            ))
        );
    }
}
