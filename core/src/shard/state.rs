//! One shard's state: the data every role of the shard reads and writes, and the few helpers
//! they share (where a topic's owner is, fresh ids, the door to other shards).
//!
//! The behaviour lives beside it, one file per role: `owner.rs` (topics this shard orders),
//! `router.rs` (this shard's subscribers), `upstream.rs` (topics owned by other nodes). All of
//! it runs on the shard's own thread, behind one `Rc<RefCell<State>>`; a borrow is never held
//! across an `.await`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ahash::{AHashMap, AHashSet};
use fanfare_proto::Start;

use crate::cluster::{NodeKey, SharedView, Upstream};
use crate::config::Config;
use crate::history::History;
use crate::ids::{Epoch, LocalTopicId, Seq, ShardId, SubId, TopicKey};
use crate::placement::shard_for;
use crate::presence::{Roster, SubPresence};
use crate::shard::dedup::Dedup;
use crate::shard::disk::{Answer, DiskIndex, Store};
use crate::shard::mesh::{MeshMsg, Outboxes, Pushed};
use crate::signal::Signal;
use crate::sink::Sink;
use crate::stats::ShardStats;

pub use crate::shard::disk::FetchCallback;

/// Where a local topic's owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// A shard of this node (`owner_of`).
    Shard,
    /// Another node, reached through the [`Upstream`].
    Node(NodeKey),
    /// No storage node is alive: subscribers wait for one.
    Nowhere,
}

/// A topic this shard owns (orders).
pub(crate) struct OwnedTopic {
    pub epoch: Epoch,
    pub next_seq: Seq,
    pub history: History,
    /// Shards with subscribers (at most one entry per shard).
    pub interested: Vec<ShardId>,
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
    }
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

/// One subscription on this shard.
pub(crate) struct Subscriber {
    pub id: SubId,
    pub sink: Rc<dyn Sink>,
    pub phase: Phase,
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

/// A topic with subscribers on this shard, wherever its owner is.
pub(crate) struct LocalTopic {
    pub id: LocalTopicId,
    pub subs: Vec<Subscriber>,
    /// Last time an item or heartbeat went out, for heartbeats.
    pub quiet_since: Instant,
    /// Where the owner is.
    pub home: Home,
    /// For a topic owned by another node: the position its live stream has reached here.
    pub up_next: Option<(Epoch, Seq)>,
    /// Subscriptions held by node links: while there are any, the topic is served by this
    /// node whatever the view says (the routers asking think it is ours).
    pub pinned: usize,
}

/// One shard's state. See the module docs.
pub(crate) struct State {
    pub id: ShardId,
    pub shards: u16,
    pub cfg: Arc<Config>,
    pub stats: Arc<ShardStats>,
    pub owned: AHashMap<TopicKey, OwnedTopic>,
    pub last_epoch: u64,
    pub local: AHashMap<TopicKey, LocalTopic>,
    /// Where each subscription lives: its topic and its index in that topic's `subs`.
    pub sub_index: AHashMap<SubId, (TopicKey, usize)>,
    pub lagging: AHashSet<SubId>,
    pub next_id: u64,
    pub outboxes: Outboxes,
    pub scratch_shards: Vec<ShardId>,
    pub closing: bool,
    /// Peers whose `Fin` arrived during shutdown.
    pub fins: usize,
    /// Work in progress on this shard that shutdown waits for (up to `drain_timeout`): the
    /// network front holds one per open connection ([`crate::ShardHandle::hold`]).
    pub holds: usize,
    pub shutdown: Rc<Signal>,
    pub last_heartbeat_scan: Instant,
    pub last_sweep: Instant,
    /// The cluster view (None: a single node owns everything).
    pub view: Option<SharedView>,
    /// The way to other nodes (None: a single node).
    pub upstream: Option<Rc<dyn Upstream>>,
    /// Fetches sent to other shards, by token.
    pub fetch_waiters: AHashMap<u64, FetchCallback>,
    /// Requests sent upstream, by id: the subscriber each answers (one per subscriber).
    pub up_reqs: AHashMap<u64, SubId>,
    /// Publishes forwarded to an owner shard, by ticket: that shard and where the answer goes
    /// (attached right after forwarding; see `router.rs`).
    pub publish_waiters: AHashMap<u64, (ShardId, Option<Answer>)>,
    /// Makes member ids: random 64-bit values, so ids from all shards and nodes never
    /// collide in practice.
    pub member_ids: ahash::RandomState,
    /// Owned topics with presence announcements held back by a rate limit.
    pub presence_pending: AHashSet<TopicKey>,
    /// The shard's log (None: history in memory only).
    pub store: Option<Store>,
}

impl State {
    pub(crate) fn new(id: ShardId, shards: u16, cfg: Arc<Config>, stats: Arc<ShardStats>) -> Self {
        let now = Instant::now();
        let epoch_base = cfg.epoch_base.unwrap_or_else(wall_clock_micros);
        Self {
            id,
            shards,
            outboxes: Outboxes::new(shards, cfg.mesh_outbox_messages_max),
            cfg,
            stats,
            owned: AHashMap::new(),
            last_epoch: epoch_base.saturating_sub(1),
            local: AHashMap::new(),
            sub_index: AHashMap::new(),
            lagging: AHashSet::new(),
            next_id: 1,
            scratch_shards: Vec::new(),
            closing: false,
            fins: 0,
            holds: 0,
            shutdown: Rc::new(Signal::default()),
            last_heartbeat_scan: now,
            last_sweep: now,
            view: None,
            upstream: None,
            fetch_waiters: AHashMap::new(),
            up_reqs: AHashMap::new(),
            publish_waiters: AHashMap::new(),
            member_ids: ahash::RandomState::new(),
            presence_pending: AHashSet::new(),
            store: None,
        }
    }

    /// Where the owner of `key` is for a topic with `pinned` link subscriptions.
    pub(crate) fn route(&self, key: &TopicKey, pinned: bool) -> Home {
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

    pub(crate) fn owner_of(&self, key: &TopicKey) -> ShardId {
        if self.shards <= 1 {
            return self.id; // the only shard: no hash of the name
        }
        ShardId(shard_for(key.as_str().as_bytes(), self.shards))
    }

    pub(crate) fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues `msg` for shard `to` (see [`Outboxes::push`] for the overflow rule).
    pub(crate) fn send(&mut self, to: ShardId, msg: MeshMsg) {
        debug_assert_ne!(to, self.id, "a shard never sends to itself over the mesh");
        if self.outboxes.push(to, msg) == Pushed::DroppedItem {
            ShardStats::inc(&self.stats.mesh_items_dropped);
        }
    }
}

/// The wall clock in microseconds since the Unix epoch (at least 1): epochs start from it.
pub(crate) fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}
