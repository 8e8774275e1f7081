//! The embeddable broker: start shards, publish and subscribe from any thread or runtime.

use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_proto::Start;
use futures_core::Stream;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::ids::{Epoch, Seq, SubId, TopicKey};
use crate::message::{
    CloseReason, Event, PublishError, PublishMeta, Published, StartError, SubscribeError,
};
use crate::placement::shard_for;
use crate::presence::{PresenceOptions, PresenceQuery, PresenceState};
use crate::shard::{self, Boot, Cmd, Ctl, ShardHandle, ShardHook};
use crate::sink::{Accept, Offer, Sink};
use crate::stats::{ShardStats, StatsSnapshot};

/// How long `start` waits for every shard to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up waits for shards that read their logs back first (a shard reports once
/// its topics are recovered).
const START_TIMEOUT_STORAGE: Duration = Duration::from_secs(30 * 60);
/// Bytes a queued event counts for on top of its payload.
const EVENT_OVERHEAD_BYTES: usize = 64;

/// A running broker. Cheap to clone; usable from any thread and any async runtime.
///
/// ```
/// use fanfare_core::{Broker, Event, Start};
///
/// let broker = Broker::builder().shards(2).start().unwrap();
/// let mut sub = broker.subscribe_blocking("chat", "room-1", Start::Latest).unwrap();
/// let p = broker.publish_blocking("chat", "room-1", "hello").unwrap();
/// match sub.next_blocking() {
///     Some(Event::Item(m)) => {
///         assert_eq!(m.payload, "hello");
///         assert_eq!((m.epoch, m.seq), (p.epoch, p.seq));
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// broker.shutdown();
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Ports {
    cmd: flume::Sender<Cmd>,
    ctl: flume::Sender<Ctl>,
}

struct Inner {
    cfg: Arc<Config>,
    /// Indexed by shard id.
    ports: Vec<Ports>,
    stats: Vec<Arc<ShardStats>>,
    joins: Mutex<Vec<ExecutorJoinHandle<()>>>,
    closing: AtomicBool,
    /// The data dir's lock, held while the broker lives (`shard::lock_data_dir`).
    data_dir: Mutex<Option<shard::DataDirLock>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn stop(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for p in &self.ports {
            // A full inbox still takes the command once the shard reads; a shard that is
            // already gone has dropped its receiver.
            let _ = p.cmd.send(Cmd::Shutdown);
        }
        let joins = std::mem::take(&mut *lock(&self.joins));
        let mut clean = true;
        for j in joins {
            if let Err(e) = j.join() {
                clean = false;
                tracing::error!("shard thread ended with an error: {e}");
            }
        }
        if clean {
            if let Some(l) = lock(&self.data_dir).as_mut() {
                l.stopped_cleanly();
            }
        }
    }
}

/// Builds a [`Broker`]; every setting has a default (see [`Config`]).
#[must_use]
pub struct BrokerBuilder {
    cfg: Config,
    hook: Option<ShardHook>,
}

impl Broker {
    /// A builder with the default configuration.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            cfg: Config::default(),
            hook: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.inner.ports.len()
    }

    /// Counters of every shard, by shard id.
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        self.inner.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// The counters summed over shards.
    pub fn stats_total(&self) -> StatsSnapshot {
        self.stats()
            .into_iter()
            .fold(StatsSnapshot::default(), |a, b| a + b)
    }

    /// The shard that owns `namespace/topic`.
    pub fn owner_shard(&self, namespace: &str, topic: &str) -> Result<usize, SubscribeError> {
        let key = TopicKey::parse(namespace, topic, self.inner.cfg.name_bytes_max)?;
        Ok(usize::from(shard_for(
            key.as_str().as_bytes(),
            self.shards() as u16,
        )))
    }

    /// Publishes `payload`; resolves to its `(epoch, seq)` once the owner has ordered it.
    /// Waits (without blocking a thread) while the owner's inbox is full.
    pub async fn publish(
        &self,
        namespace: &str,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Published, PublishError> {
        self.publish_with(namespace, topic, payload, PublishMeta::default())
            .await
    }

    /// [`Broker::publish`] with a publisher identity and an idempotency key: a retry carrying
    /// the same key (same publisher, same topic, within `idempotency_window`) gets the
    /// original `(epoch, seq)` and orders no second message.
    pub async fn publish_with(
        &self,
        namespace: &str,
        topic: &str,
        payload: impl Into<Bytes>,
        meta: PublishMeta,
    ) -> Result<Published, PublishError> {
        let payload = payload.into();
        let cfg = &self.inner.cfg;
        let key = TopicKey::parse(namespace, topic, cfg.name_bytes_max)?;
        if payload.len() > cfg.message_bytes_max {
            return Err(PublishError::TooLarge {
                len: payload.len(),
                max: cfg.message_bytes_max,
            });
        }
        if self.inner.closing.load(Ordering::Relaxed) {
            return Err(PublishError::ShuttingDown);
        }
        let owner = usize::from(shard_for(key.as_str().as_bytes(), self.shards() as u16));
        let (reply, rx) = flume::bounded(1);
        self.inner.ports[owner]
            .cmd
            .send_async(Cmd::Publish {
                key,
                payload,
                meta,
                reply,
            })
            .await
            .map_err(|_| PublishError::ShuttingDown)?;
        rx.recv_async()
            .await
            .unwrap_or(Err(PublishError::ShuttingDown))
    }

    /// [`Broker::publish`] for plain threads: blocks until the owner has ordered the message.
    pub fn publish_blocking(
        &self,
        namespace: &str,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Published, PublishError> {
        futures_lite::future::block_on(self.publish(namespace, topic, payload))
    }

    /// Subscribes to `namespace/topic` from `start`; resolves once the subscription is live.
    ///
    /// The subscription lives on the topic's owner shard. Its queue holds at most
    /// `subscriber_queue_bytes_max`; a consumer that falls further behind skips ahead and is
    /// caught up from history when it reads again, or told of a discontinuity.
    pub async fn subscribe(
        &self,
        namespace: &str,
        topic: &str,
        start: Start,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_with(namespace, topic, start, PresenceOptions::default())
            .await
    }

    /// [`Broker::subscribe`] with presence options: listed as a member of the topic while
    /// subscribed, and/or [`Event::Presence`] events (see [`crate::presence`]).
    pub async fn subscribe_with(
        &self,
        namespace: &str,
        topic: &str,
        start: Start,
        presence: PresenceOptions,
    ) -> Result<Subscription, SubscribeError> {
        let cfg = &self.inner.cfg;
        let key = TopicKey::parse(namespace, topic, cfg.name_bytes_max)?;
        if self.inner.closing.load(Ordering::Relaxed) {
            return Err(SubscribeError::ShuttingDown);
        }
        let owner = usize::from(shard_for(key.as_str().as_bytes(), self.shards() as u16));
        let ports = &self.inner.ports[owner];
        let queue = Arc::new(Queue::new(
            cfg.subscriber_queue_bytes_max,
            ports.ctl.clone(),
        ));
        let (q1, q2) = (queue.clone(), queue.clone());
        let cmd = Cmd::Subscribe {
            key,
            start,
            presence,
            sink: Box::new(move || Rc::new(QueueSink(q1)) as Rc<dyn Sink>),
            on_error: Box::new(move |e| q2.close(CloseReason::Failed(e))),
        };
        ports
            .cmd
            .send_async(cmd)
            .await
            .map_err(|_| SubscribeError::ShuttingDown)?;
        let first = std::future::poll_fn(|cx| queue.poll_first(cx)).await;
        match first {
            Ok((sub, epoch, next_seq)) => Ok(Subscription {
                queue,
                sub,
                epoch,
                next_seq,
            }),
            Err(CloseReason::Failed(e)) => Err(e),
            Err(_) => Err(SubscribeError::ShuttingDown),
        }
    }

    /// [`Broker::subscribe`] for plain threads.
    pub fn subscribe_blocking(
        &self,
        namespace: &str,
        topic: &str,
        start: Start,
    ) -> Result<Subscription, SubscribeError> {
        futures_lite::future::block_on(self.subscribe(namespace, topic, start))
    }

    /// The presence of `namespace/topic`: its occupancy (subscribers on every shard, and in a
    /// cluster on every node) and, when `q.members`, one page of its members.
    pub async fn presence(
        &self,
        namespace: &str,
        topic: &str,
        q: PresenceQuery,
    ) -> Result<PresenceState, SubscribeError> {
        let key = TopicKey::parse(namespace, topic, self.inner.cfg.name_bytes_max)?;
        let owner = usize::from(shard_for(key.as_str().as_bytes(), self.shards() as u16));
        let (tx, rx) = flume::bounded(1);
        self.run_on(owner, move |h| {
            let fut = h.presence(key, q);
            h.tasks()
                .spawn(crate::tasks::TaskKind::Embedder, async move {
                    let _ = tx.try_send(fut.await);
                })
                .detach();
        })?;
        rx.recv_async()
            .await
            .unwrap_or(Err(SubscribeError::ShuttingDown))
    }

    /// Runs `f` on shard `shard`'s thread with a handle to it (for subscribing a custom
    /// [`Sink`] there, or spawning tasks on its executor). Fails when the shard is gone.
    pub fn run_on(
        &self,
        shard: usize,
        f: impl FnOnce(&ShardHandle) + Send + 'static,
    ) -> Result<(), SubscribeError> {
        let port = self
            .inner
            .ports
            .get(shard)
            .ok_or(SubscribeError::ShuttingDown)?;
        port.cmd
            .send(Cmd::Run(Box::new(f)))
            .map_err(|_| SubscribeError::ShuttingDown)
    }

    /// Stops the broker: shards refuse new work, let network subscribers drain (up to
    /// `drain_timeout`), end every subscription with `ShuttingDown` after the events already
    /// queued, finish the cross-shard messages in flight, and exit. Blocks until every
    /// shard thread has ended; call it from outside the shards. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}

impl BrokerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    /// Shards to run (0: one per available core).
    pub fn shards(mut self, n: usize) -> Self {
        self.cfg.shards = n;
        self
    }

    /// Pin each shard to its own CPU.
    pub fn pin(mut self, pin: bool) -> Self {
        self.cfg.pin = pin;
        self
    }

    /// Keeps history on disk in `dir` (one log per shard, publishes acknowledged after
    /// fdatasync; docs/storage.md), with the storage defaults: set
    /// [`Config::storage`] through [`BrokerBuilder::config`] for the rest.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cfg.storage = Some(crate::config::StorageConfig::new(dir));
        self
    }

    /// History kept per topic: at most `messages` and `bytes` of payload.
    pub fn history(mut self, messages: usize, bytes: usize) -> Self {
        self.cfg.history_messages_max = messages;
        self.cfg.history_bytes_max = bytes;
        self
    }

    /// Heartbeat interval on quiet subscriptions.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.cfg.heartbeat_interval = d;
        self
    }

    /// Bytes a library subscriber may have queued before it lags.
    pub fn subscriber_queue_bytes_max(mut self, n: usize) -> Self {
        self.cfg.subscriber_queue_bytes_max = n;
        self
    }

    /// Runs `hook` on every shard once it is up, on the shard's own thread.
    pub fn on_shard_start(mut self, hook: impl Fn(ShardHandle) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Starts the shards and returns once every one is serving.
    pub fn start(self) -> Result<Broker, StartError> {
        let cfg = self.cfg;
        cfg.validate().map_err(StartError::Config)?;
        let n = cfg.shard_count();
        let cpus = if cfg.pin {
            let online: Vec<usize> = glommio::CpuSet::online()
                .map_err(|e| StartError::Config(format!("cannot read the CPU topology: {e}")))?
                .into_iter()
                .map(|l| l.cpu)
                .collect();
            let cpus = cfg.cpus.clone().unwrap_or_else(|| online.clone());
            if let Some(c) = cpus.iter().find(|c| !online.contains(c)) {
                return Err(StartError::Config(format!("CPU {c} is not online")));
            }
            if cpus.len() < n {
                return Err(StartError::Config(format!(
                    "pinning {n} shards needs {n} CPUs, only {} given",
                    cpus.len()
                )));
            }
            cpus
        } else {
            Vec::new()
        };
        let mut cfg = cfg;
        let data_dir = match cfg.storage.as_mut() {
            Some(st) => {
                let lock = shard::lock_data_dir(&st.data_dir).map_err(StartError::Config)?;
                shard::check_layout(&st.data_dir, n).map_err(StartError::Config)?;
                if lock.rebooted_under_it && st.fsync == crate::config::Fsync::Never {
                    tracing::error!(
                        dir = %st.data_dir.display(),
                        "the machine restarted while the last broker ran with fsync = never: \
                         acknowledged messages it had not synced may be lost, so every topic \
                         starts a new epoch (subscribers are told)"
                    );
                    st.unsynced_loss = true;
                }
                Some(lock)
            }
            None => None,
        };
        let cfg = Arc::new(cfg);
        let mesh = MeshBuilder::full(n, cfg.mesh_channel_batches);
        let (report, reports) = std::sync::mpsc::channel();
        let mut ports_by_thread = Vec::with_capacity(n);
        let mut joins = Vec::with_capacity(n);
        for i in 0..n {
            let (cmd, cmd_rx) = flume::bounded(cfg.shard_inbox_max);
            let (ctl, ctl_rx) = flume::unbounded();
            ports_by_thread.push(Some(Ports { cmd, ctl }));
            let placement = match cpus.get(i) {
                Some(cpu) if cfg.pin => Placement::Fixed(*cpu),
                _ => Placement::Unbound,
            };
            let mut b = LocalExecutorBuilder::new(placement)
                .name(&format!("fanfare-shard-{i}"))
                .io_memory(cfg.io_memory_bytes);
            if let Some(spin) = cfg.spin_before_park {
                b = b.spin_before_park(spin);
            }
            let boot = Boot {
                thread_index: i,
                shards: n as u16,
                cfg: cfg.clone(),
                mesh: mesh.clone(),
                cmd_rx,
                ctl_rx,
                report: report.clone(),
                hook: self.hook.clone(),
            };
            let j = b
                .spawn(move || shard::run(boot))
                .map_err(|e| StartError::Shard {
                    shard: i,
                    reason: e.to_string(),
                })?;
            joins.push(j);
        }
        drop(report);
        let mut ports: Vec<Option<Ports>> = (0..n).map(|_| None).collect();
        let mut stats: Vec<Option<Arc<ShardStats>>> = vec![None; n];
        // Reading a shard's log back takes as long as the disk needs for its retention.
        let wait = if cfg.storage.is_some() {
            START_TIMEOUT_STORAGE
        } else {
            START_TIMEOUT
        };
        let deadline = Instant::now() + wait;
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = reports.recv_timeout(left).map_err(|_| StartError::Shard {
                shard: 0,
                reason: "a shard did not start in time (could its executor not be created?)".into(),
            })?;
            let (thread, id, st) = r.map_err(|reason| StartError::Shard { shard: 0, reason })?;
            let slot = usize::from(id.0);
            ports[slot] = ports_by_thread[thread].take();
            stats[slot] = Some(st);
        }
        // Every shard reported a distinct mesh position, so every slot is filled.
        let ports: Vec<Ports> = ports.into_iter().flatten().collect();
        let stats: Vec<Arc<ShardStats>> = stats.into_iter().flatten().collect();
        if ports.len() != n || stats.len() != n {
            return Err(StartError::Shard {
                shard: 0,
                reason: "shards reported overlapping mesh positions".into(),
            });
        }
        Ok(Broker {
            inner: Arc::new(Inner {
                cfg,
                ports,
                stats,
                joins: Mutex::new(joins),
                closing: AtomicBool::new(false),
                data_dir: Mutex::new(data_dir),
            }),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the data consistent (every critical
    // section is a few field updates), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// -------------------------------------------------------------------- subscriptions

enum Queued {
    Subscribed {
        sub: SubId,
        epoch: Epoch,
        next_seq: Seq,
    },
    Event(Event, usize),
}

struct QueueState {
    events: VecDeque<Queued>,
    bytes: usize,
    sub: Option<SubId>,
    lagging: bool,
    closed: Option<CloseReason>,
    dropped: bool,
    waker: Option<Waker>,
}

/// A library subscriber's queue, shared by its shard (producer) and its consumer thread.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    bytes_max: usize,
    ctl: flume::Sender<Ctl>,
}

impl Queue {
    fn new(bytes_max: usize, ctl: flume::Sender<Ctl>) -> Self {
        Self {
            state: Mutex::new(QueueState {
                events: VecDeque::new(),
                bytes: 0,
                sub: None,
                lagging: false,
                closed: None,
                dropped: false,
                waker: None,
            }),
            ready: Condvar::new(),
            bytes_max,
            ctl,
        }
    }

    fn notify(&self, mut st: MutexGuard<'_, QueueState>) {
        let w = st.waker.take();
        drop(st);
        self.ready.notify_all();
        if let Some(w) = w {
            w.wake();
        }
    }

    fn close(&self, reason: CloseReason) {
        let mut st = lock(&self.state);
        st.closed.get_or_insert(reason);
        self.notify(st);
    }

    fn offer(&self, sub: SubId, offer: Offer<'_>) -> Accept {
        let mut st = lock(&self.state);
        if st.dropped {
            return Accept::Gone;
        }
        let (q, size) = match offer {
            Offer::Subscribed {
                epoch, next_seq, ..
            } => {
                st.sub = Some(sub);
                (
                    Queued::Subscribed {
                        sub,
                        epoch,
                        next_seq,
                    },
                    0,
                )
            }
            Offer::Item(d) => {
                let size = d.message.payload.len() + EVENT_OVERHEAD_BYTES;
                if st.bytes + size > self.bytes_max && !st.events.is_empty() {
                    st.lagging = true;
                    return Accept::Full;
                }
                (Queued::Event(Event::Item(d.message.clone()), size), size)
            }
            Offer::Heartbeat { epoch, next_seq } => {
                if st.bytes + EVENT_OVERHEAD_BYTES > self.bytes_max {
                    return Accept::Full;
                }
                let e = Event::Heartbeat { epoch, next_seq };
                (Queued::Event(e, EVENT_OVERHEAD_BYTES), EVENT_OVERHEAD_BYTES)
            }
            Offer::Discontinuity {
                last_seq,
                new_seq,
                new_epoch,
            } => {
                let e = Event::Discontinuity {
                    last_seq,
                    new_seq,
                    new_epoch,
                };
                (Queued::Event(e, EVENT_OVERHEAD_BYTES), EVENT_OVERHEAD_BYTES)
            }
            Offer::Closed(r) => {
                st.closed.get_or_insert_with(|| r.clone());
                self.notify(st);
                return Accept::Queued;
            }
            Offer::Presence(e) => {
                let e = Event::Presence(e.clone());
                (Queued::Event(e, EVENT_OVERHEAD_BYTES), EVENT_OVERHEAD_BYTES)
            }
        };
        st.bytes += size;
        st.events.push_back(q);
        self.notify(st);
        Accept::Queued
    }

    /// Waits for the first event: `Subscribed` (or the reason it failed).
    fn poll_first(&self, cx: &mut Context<'_>) -> Poll<Result<(SubId, Epoch, Seq), CloseReason>> {
        let mut st = lock(&self.state);
        if let Some(Queued::Subscribed { .. }) = st.events.front() {
            if let Some(Queued::Subscribed {
                sub,
                epoch,
                next_seq,
            }) = st.events.pop_front()
            {
                return Poll::Ready(Ok((sub, epoch, next_seq)));
            }
        }
        if let Some(r) = &st.closed {
            return Poll::Ready(Err(r.clone()));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Takes the next event; `Ready(None)` once closed and empty.
    fn poll_next(&self, cx: Option<&mut Context<'_>>) -> Poll<Option<Event>> {
        let mut st = lock(&self.state);
        while let Some(q) = st.events.pop_front() {
            let Queued::Event(e, size) = q else { continue };
            st.bytes -= size;
            if st.lagging && st.bytes <= self.bytes_max / 2 {
                st.lagging = false;
                if let Some(sub) = st.sub {
                    // Unbounded channel: at most one Drained per subscription is outstanding.
                    let _ = self.ctl.send(Ctl::Drained(sub));
                }
            }
            return Poll::Ready(Some(e));
        }
        if st.closed.is_some() {
            return Poll::Ready(None);
        }
        if let Some(cx) = cx {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

struct QueueSink(Arc<Queue>);

impl Sink for QueueSink {
    fn offer(&self, sub: SubId, offer: Offer<'_>) -> Accept {
        self.0.offer(sub, offer)
    }
}

/// A live subscription: a [`Stream`] of [`Event`]s, also readable from plain threads with
/// [`Subscription::next_blocking`]. The stream ends when the subscription is closed (see
/// [`Subscription::close_reason`]); dropping it unsubscribes.
pub struct Subscription {
    queue: Arc<Queue>,
    sub: SubId,
    epoch: Epoch,
    next_seq: Seq,
}

impl Subscription {
    /// The topic's epoch when the subscription started.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The first sequence the subscription delivers (after a discontinuity, if one is first).
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Blocks until the next event; `None` once the subscription is closed.
    pub fn next_blocking(&mut self) -> Option<Event> {
        self.next_timeout(Duration::MAX).ok().flatten()
    }

    /// Waits up to `timeout` for the next event: `Err(())` on timeout, `Ok(None)` once closed.
    #[allow(clippy::result_unit_err)]
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, ()> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Poll::Ready(e) = self.queue.poll_next(None) {
                return Ok(e);
            }
            let st = lock(&self.queue.state);
            if !st.events.is_empty() || st.closed.is_some() {
                continue;
            }
            match deadline {
                None => drop(self.queue.ready.wait(st).unwrap_or_else(|e| e.into_inner())),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(());
                    }
                    drop(
                        self.queue
                            .ready
                            .wait_timeout(st, left)
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                }
            }
        }
    }

    /// Why the subscription ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.queue.state).closed.clone()
    }

    /// Bytes queued and not yet read.
    pub fn queued_bytes(&self) -> usize {
        lock(&self.queue.state).bytes
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.queue.poll_next(Some(cx))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.queue.state).dropped = true;
        let _ = self.queue.ctl.send(Ctl::Unsubscribe(self.sub));
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sub", &self.sub)
            .field("epoch", &self.epoch)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}
