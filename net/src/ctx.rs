//! [`NetCtx`]: what every connection of one shard shares (its engine handle, limits,
//! counters, TLS, access control, the registry of live connections).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use fanfare_core::ShardHandle;
use flatbuffers::FlatBufferBuilder;

use crate::auth::{Auth, FailureLimiter};
use crate::cluster::ClusterShared;
use crate::config::Limits;
use crate::hub::AdminHub;
use crate::metrics::{NetStats, Registry};

/// Registry size below which dead connections are left for the sweep to prune.
const LIVE_PRUNE_MIN: usize = 1024;

/// A connection as the shard's periodic sweep sees it.
pub(crate) trait Tracked {
    /// Runs the connection's periodic checks (deadlines, pings, token expiry).
    fn keepalive(&self, now: Instant);
    /// The broker is stopping ([`NetCtx::stopping`] is set): wake the connection's task.
    fn stop(&self);
}

/// What a shard's connections share.
pub(crate) struct NetCtx {
    pub shard: ShardHandle,
    pub limits: Arc<Limits>,
    pub stats: Arc<NetStats>,
    pub registry: Arc<Registry>,
    pub connections: Cell<usize>,
    pub connections_max: usize,
    /// Set when the broker starts stopping; the sweep then wakes every connection (a
    /// WebSocket session checks this flag instead of holding a shutdown future of its own).
    pub stopping: Cell<bool>,
    /// Connections closed since memory was last given back (see `listener::sweep_loop`).
    pub closed_since_trim: Cell<usize>,
    /// Set when TLS is configured: connections starting with a TLS record are terminated here.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// Publish-to-delivery latency recorded on this shard (µs); the sweep copies it into
    /// `latency_snapshot` for scrapes, so the data path never takes a lock.
    pub latency: RefCell<hdrhistogram::Histogram<u64>>,
    pub latency_snapshot: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    /// Every live connection, for the keepalive sweep. Dead entries are pruned by the sweep
    /// and, so churn between sweeps cannot grow it, whenever it has doubled since the last
    /// prune (amortized O(1) per connection).
    live: RefCell<Vec<Weak<dyn Tracked>>>,
    live_prune_at: Cell<usize>,
    /// Builder for the flatbuffers this shard encodes (never used across an await).
    pub fbb: RefCell<FlatBufferBuilder<'static>>,
    /// Access control (shared, read-only) and this shard's memory of failures by IP.
    pub auth: Arc<Auth>,
    pub limiter: RefCell<FailureLimiter>,
    /// Every shard's admin inbox.
    pub admin: Arc<AdminHub>,
    /// Cluster state (None: a single node).
    pub cluster: Option<Arc<ClusterShared>>,
    /// Whether this node serves clients' publishes and subscribes (the router role).
    pub router_role: bool,
}

/// The parts of a [`NetCtx`] that are not its own state.
pub(crate) struct CtxParts {
    pub shard: ShardHandle,
    pub limits: Arc<Limits>,
    pub stats: Arc<NetStats>,
    pub registry: Arc<Registry>,
    pub connections_max: usize,
    pub tls: Option<futures_rustls::TlsAcceptor>,
    pub latency_snapshot: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    pub auth: Arc<Auth>,
    pub admin: Arc<AdminHub>,
    pub cluster: Option<Arc<ClusterShared>>,
}

impl NetCtx {
    /// A shard's context.
    pub fn new(p: CtxParts) -> Self {
        Self {
            router_role: p.cluster.as_ref().is_none_or(|c| c.cfg.roles.router),
            limiter: RefCell::new(FailureLimiter::new(&p.auth.cfg)),
            shard: p.shard,
            limits: p.limits,
            stats: p.stats,
            registry: p.registry,
            connections: Cell::new(0),
            connections_max: p.connections_max,
            closed_since_trim: Cell::new(0),
            stopping: Cell::new(false),
            tls: p.tls,
            latency: RefCell::new(crate::metrics::latency_histogram()),
            latency_snapshot: p.latency_snapshot,
            live: RefCell::new(Vec::new()),
            live_prune_at: Cell::new(LIVE_PRUNE_MIN),
            fbb: RefCell::new(FlatBufferBuilder::with_capacity(4096)),
            auth: p.auth,
            admin: p.admin,
            cluster: p.cluster,
        }
    }

    /// Whether requests need a token.
    pub fn auth_on(&self) -> bool {
        self.auth.enabled()
    }

    /// Adds a connection to the sweep's registry.
    pub fn track(&self, conn: Weak<dyn Tracked>) {
        let mut live = self.live.borrow_mut();
        if live.len() >= self.live_prune_at.get() {
            live.retain(|w| w.strong_count() > 0);
            self.live_prune_at.set((2 * live.len()).max(LIVE_PRUNE_MIN));
        }
        live.push(conn);
    }

    /// Every live connection (pruning the dead ones).
    pub fn live(&self) -> Vec<Rc<dyn Tracked>> {
        let mut live = self.live.borrow_mut();
        live.retain(|w| w.strong_count() > 0);
        if live.capacity() > LIVE_PRUNE_MIN && live.len() * 4 < live.capacity() {
            let n = live.len() * 2;
            live.shrink_to(n);
        }
        live.iter().filter_map(Weak::upgrade).collect()
    }

    /// Records one publish-to-delivery latency (µs from `published_at` to `now`).
    pub fn record_latency(&self, published_at: Instant, now: Instant) {
        let us = now
            .saturating_duration_since(published_at)
            .as_micros()
            .min(u128::from(u64::MAX)) as u64;
        self.latency.borrow_mut().saturating_record(us.max(1));
    }
}
