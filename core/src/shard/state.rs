//! One shard's state: its parts, each owning its data behind a small API with the invariants
//! it keeps, composed here, and the few helpers every role shares (where a topic's owner is,
//! fresh ids, the door to other shards).
//!
//! The parts: [`OwnedTopics`] (`owned.rs`: the topics this shard orders), [`LocalTopics`]
//! (`local.rs`: this shard's subscriptions), [`MeshPort`] (`mesh.rs`: the other shards of this
//! node), [`UpstreamPort`] (`upstream_port.rs`: other nodes) and the [`Store`] (`disk.rs`: the
//! shard's log). No part calls another: what one part's change means for the others is
//! decided by the role files (`owner.rs`, `router.rs`, `upstream.rs`, `presence.rs`,
//! `store.rs`, `catchup.rs`, `run.rs`), which compose them through `State`. All of it runs on
//! the shard's own thread, behind one `Rc<RefCell<State>>`; a borrow is never held across an
//! `.await`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::ids::{ShardId, TopicKey};
use crate::message::{PublishError, Published};
use crate::placement::shard_for;
use crate::shard::disk::{PublishCallback, Store};
use crate::shard::local::{Home, LocalTopics};
use crate::shard::mesh::{MeshMsg, MeshPort, Pushed};
use crate::shard::owned::OwnedTopics;
use crate::shard::upstream_port::UpstreamPort;
use crate::signal::Signal;
use crate::stats::ShardStats;

/// One shard's state: its parts, composed (see the module docs).
pub(crate) struct State {
    pub id: ShardId,
    pub shards: u16,
    pub cfg: Arc<Config>,
    pub stats: Arc<ShardStats>,
    /// The owner's part: the topics this shard orders.
    pub owned: OwnedTopics,
    /// The router's part: this shard's subscriptions.
    pub local: LocalTopics,
    /// The door to the other shards of this node.
    pub mesh: MeshPort,
    /// The door to other nodes.
    pub up: UpstreamPort,
    /// The shard's log (None: history in memory only).
    pub store: Option<Store>,
    /// Shutdown has begun: no new work is taken.
    pub closing: bool,
    /// Work in progress on this shard that shutdown waits for (up to `drain_timeout`): the
    /// network front holds one per open connection ([`crate::ShardHandle::hold`]).
    pub holds: usize,
    pub shutdown: Rc<Signal>,
    next_id: u64,
    /// Makes member ids: random 64-bit values, so ids from all shards and nodes never
    /// collide in practice.
    member_ids: ahash::RandomState,
    /// Reused for the shards a message goes to (no allocation per publish).
    pub scratch_shards: Vec<ShardId>,
    /// Publish answers for callers on this shard ([`Answer::Call`]), queued by
    /// [`State::answer`] and run by [`with_state`] once the state is no longer borrowed.
    ///
    /// [`Answer::Call`]: crate::shard::disk::Answer::Call
    completions: Vec<Completion>,
    /// The other buffer of `completions` (swapped, so running them allocates nothing).
    spare_completions: Vec<Completion>,
}

/// A publish callback and its answer, to run once the state is no longer borrowed.
pub(crate) type Completion = (PublishCallback, Result<Published, PublishError>);

/// Runs `f` on the shard's state, then, once the borrow has ended, every publish callback it
/// completed: a callback never runs while the state is borrowed. Every loop and door that
/// can complete a publish for a caller on this shard goes through it (mesh receive, the log's
/// loop, `ShardHandle::when_answered`, the tick).
pub(crate) fn with_state<R>(state: &Rc<RefCell<State>>, f: impl FnOnce(&mut State) -> R) -> R {
    let (r, mut done) = {
        let mut st = state.borrow_mut();
        let r = f(&mut st);
        if st.completions.is_empty() {
            return r;
        }
        let spare = std::mem::take(&mut st.spare_completions);
        (r, std::mem::replace(&mut st.completions, spare))
    };
    for (callback, answer) in done.drain(..) {
        callback(answer);
    }
    let mut st = state.borrow_mut();
    if st.spare_completions.capacity() < done.capacity() {
        st.spare_completions = done;
    }
    r
}

impl State {
    pub(crate) fn new(
        id: ShardId,
        shards: u16,
        cfg: Arc<Config>,
        stats: Arc<ShardStats>,
        now: Instant,
    ) -> Self {
        let epoch_base = cfg.epoch_base.unwrap_or_else(wall_clock_micros);
        Self {
            id,
            shards,
            owned: OwnedTopics::new(epoch_base, cfg.epoch_base.is_some(), now),
            local: LocalTopics::new(now),
            mesh: MeshPort::new(id, shards, cfg.mesh_outbox_messages_max),
            up: UpstreamPort::default(),
            store: None,
            cfg,
            stats,
            closing: false,
            holds: 0,
            shutdown: Rc::new(Signal::default()),
            next_id: 1,
            member_ids: ahash::RandomState::new(),
            scratch_shards: Vec::new(),
            completions: Vec::new(),
            spare_completions: Vec::new(),
        }
    }

    /// Where the owner of `key` is for a topic with `pinned` link subscriptions.
    pub(crate) fn route(&self, key: &TopicKey, pinned: bool) -> Home {
        self.up.route(key, pinned)
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

    /// A member id: random, so ids from all shards and nodes never collide in practice.
    pub(crate) fn fresh_member_id(&mut self) -> u64 {
        let n = self.fresh_id();
        self.member_ids.hash_one(n) | 1
    }

    /// Queues a caller's publish callback with its answer (run by [`with_state`]).
    pub(crate) fn complete(
        &mut self,
        callback: PublishCallback,
        r: Result<Published, PublishError>,
    ) {
        self.completions.push((callback, r));
    }

    /// Queues `msg` for shard `to` (see [`Outboxes::push`] for the overflow rule).
    ///
    /// [`Outboxes::push`]: crate::shard::mesh::Outboxes::push
    pub(crate) fn send(&mut self, to: ShardId, msg: MeshMsg) {
        if self.mesh.send(to, msg) == Pushed::DroppedItem {
            ShardStats::inc(&self.stats.mesh_items_dropped);
        }
    }

    /// Every part's invariants, by a walk of all of it (debug and test builds: the tick; the
    /// tests). Panics with the one that fails.
    pub(crate) fn check_all(&self) {
        self.local.check_all();
        self.owned.check_all();
    }
}

/// The wall clock in microseconds since the Unix epoch (at least 1): epochs start from it.
pub(crate) fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}
