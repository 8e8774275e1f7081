//! A shard's life: start-up (joining the mesh), its loops (library commands, mesh receive,
//! outbox flush, control, tick), the dispatch of what other shards send, and shutdown.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_proto::Start;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;

use crate::cluster::Replay;
use crate::config::Config;
use crate::ids::{ShardId, SubId, TopicKey};
use crate::message::{CloseReason, PublishError, PublishMeta, Published, SubscribeError};
use crate::presence::PresenceOptions;
use crate::shard::disk::{Answer, ReplyTo};
use crate::shard::handle::ShardHandle;
use crate::shard::mesh::MeshMsg;
use crate::shard::state::{with_state, State};
use crate::shard::store;
use crate::sink::Sink;
use crate::stats::ShardStats;
use crate::tasks::{TaskKind, Tasks};

/// Period of the maintenance tick (heartbeats, lag limits, idle topics), at most.
const TICK_MAX: Duration = Duration::from_millis(100);

/// Commands from library callers on other threads.
pub(crate) enum Cmd {
    Publish {
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
        reply: flume::Sender<Result<Published, PublishError>>,
    },
    Subscribe {
        key: TopicKey,
        start: Start,
        presence: PresenceOptions,
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
    let tasks = Tasks::new();
    let state = Rc::new(RefCell::new(State::new(
        id,
        shards,
        cfg.clone(),
        stats.clone(),
        Instant::now(),
    )));
    let senders = Rc::new(senders);
    // With a data dir: read the shard's log back before anything is served.
    let store = match &cfg.storage {
        Some(sc) => match store::open(&state, sc).await {
            Ok(dev) => {
                let dir = dev.dir().to_path_buf();
                let reads = crate::shard::catchup::read_loop(state.clone(), dir);
                tasks.spawn(TaskKind::DiskReads, reads).detach();
                Some(tasks.spawn(TaskKind::StoreLoop, store::store_loop(state.clone(), dev)))
            }
            Err(e) => {
                let _ = report.send(Err(format!("shard {}: {e}", id.0)));
                return;
            }
        },
        None => None,
    };

    let flushers: Vec<_> = (0..shards)
        .filter(|p| *p != id.0)
        .map(|p| {
            tasks.spawn(
                TaskKind::MeshFlush,
                flush_loop(state.clone(), senders.clone(), p),
            )
        })
        .collect();
    let receivers: Vec<_> = receivers
        .streams()
        .into_iter()
        .map(|(peer, rx)| tasks.spawn(TaskKind::MeshRecv, recv_loop(state.clone(), rx, peer)))
        .collect();
    tasks
        .spawn(TaskKind::Control, ctl_loop(state.clone(), ctl_rx))
        .detach();
    let ticker = tasks.spawn(TaskKind::Tick, tick_loop(state.clone()));
    if let Some(hook) = hook {
        hook(ShardHandle {
            state: state.clone(),
            tasks: tasks.clone(),
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
                meta,
                reply,
            } => {
                if st.closing {
                    let _ = reply.try_send(Err(PublishError::ShuttingDown));
                } else {
                    st.owner_publish_to(key, payload, meta, Answer::Channel(reply), Instant::now());
                }
            }
            Cmd::Subscribe {
                key,
                start,
                presence,
                sink,
                on_error,
            } => {
                if let Err(e) = st.subscribe(key, start, sink(), false, presence, Instant::now()) {
                    on_error(e);
                }
            }
            Cmd::Run(f) => {
                drop(st);
                f(&ShardHandle {
                    state: state.clone(),
                    tasks: tasks.clone(),
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
    tasks.stopping();
    {
        let mut st = state.borrow_mut();
        st.closing = true;
        for peer in (0..shards).filter(|p| *p != id.0) {
            st.send(ShardId(peer), MeshMsg::Fin);
        }
    }
    while state.borrow().mesh.fins() + 1 < usize::from(shards) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    // Publishes waiting for the disk are answered (and delivered) before subscribers close.
    if let Some(s) = state.borrow_mut().store.as_mut() {
        s.wake();
    }
    while state
        .borrow()
        .store
        .as_ref()
        .is_some_and(|s| s.waiting() > 0)
        && Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    {
        let mut st = state.borrow_mut();
        st.shutdown.fire();
        st.close_subs(CloseReason::ShuttingDown, true, Instant::now());
    }
    // Connections (held work) and subscriptions get until the drain deadline to end.
    while {
        let st = state.borrow();
        st.local.subscriptions() > 0 || st.holds > 0
    } && Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    state
        .borrow_mut()
        .close_subs(CloseReason::ShuttingDown, false, Instant::now());
    state.borrow_mut().mesh.outboxes().close_all();
    for f in flushers {
        f.await;
    }
    senders.close();
    for r in receivers {
        r.await;
    }
    if let Some(s) = state.borrow_mut().store.as_mut() {
        s.stopping = true;
        s.wake();
    }
    if let Some(s) = store {
        // It ends once nothing waits for the disk; a disk that hangs past the drain
        // deadline is abandoned (what waits was never acknowledged).
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100);
        futures_lite::future::or(s, glommio::timer::sleep(left)).await;
    }
    drop(ticker);
    // What still runs ends with the executor: said, by kind (a connection that ignored the
    // drain deadline, a node link, an embedder's task).
    let left: Vec<String> = tasks
        .stats()
        .snapshot()
        .into_iter()
        .filter(|c| c.running > 0)
        .map(|c| format!("{} {}", c.kind.name(), c.running))
        .collect();
    if !left.is_empty() {
        tracing::info!(shard = id.0, tasks = %left.join(", "), "tasks still running when the shard stopped");
    }
}

impl State {
    /// Handles one message from another shard.
    pub(crate) fn handle_mesh(&mut self, msg: MeshMsg, now: Instant) {
        match msg {
            MeshMsg::Publish {
                key,
                payload,
                meta,
                from,
                ticket,
            } => {
                let answer = Answer::Shard { to: from, ticket };
                if self.closing {
                    // This shard sent its Fin (it stopped taking work): nothing is ordered,
                    // and the answer says so.
                    self.answer(answer, Err(PublishError::ShuttingDown));
                } else {
                    self.owner_publish_to(key, payload, meta, answer, now);
                }
            }
            MeshMsg::PublishReply { ticket, reply } => self.on_publish_reply(ticket, reply),
            MeshMsg::Subscribe {
                key,
                start,
                from,
                sub,
            } => {
                self.owner_subscribe(&key, start, from, ReplyTo::Shard { to: from, sub }, now);
            }
            MeshMsg::Uninterest { key, from } => self.owner_uninterest(&key, from, now),
            MeshMsg::SubscribeReply { sub, reply } => self.on_subscribe_reply(sub, reply, now),
            MeshMsg::Item { key, msg } => self.deliver_live(&key, &msg, now),
            MeshMsg::Fetch {
                key,
                start,
                from,
                token,
            } => {
                let reply = self.owner_fetch(&key, start);
                self.answer_owner(&key, reply, ReplyTo::Fetch { to: from, token }, now);
            }
            MeshMsg::FetchReply { token, reply } => {
                if let Some(cb) = self.mesh.fetched(token) {
                    cb(reply.map(Replay::from));
                }
            }
            MeshMsg::Presence { key, from, delta } => self.owner_presence(&key, from, delta, now),
            MeshMsg::PresenceEvent { key, event } => self.deliver_presence(&key, &event),
            MeshMsg::PresenceQuery { key, q, reply } => {
                let _ = reply.try_send(Ok(self.owner_presence_state(&key, q)));
            }
            // Forwarded publishes still waiting on the peer are answered after its Fin when
            // they wait for its disk, so they fail only once its mesh closes (`recv_loop`).
            MeshMsg::Fin => self.mesh.fin(),
        }
    }

    /// Periodic work: heartbeats, lag limits, owned-topic sweep; and, in debug and test
    /// builds, a walk of every part checking its invariants.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.heartbeats(now);
        self.enforce_lag(now);
        self.sweep_owned(now);
        self.presence_tick(now);
        self.compact();
        if cfg!(debug_assertions) {
            self.check_all();
        }
    }

    /// Gives back what the shard's maps grew to in a burst (a connection storm, a wave of
    /// subscriptions) once three quarters of it is unused, so memory follows the load down.
    fn compact(&mut self) {
        self.local.compact();
        self.owned.compact();
        self.up.compact();
        self.mesh.compact();
    }
}

async fn flush_loop(state: Rc<RefCell<State>>, senders: Rc<Senders<Vec<MeshMsg>>>, peer: u16) {
    loop {
        let batch = std::future::poll_fn(|cx: &mut Context<'_>| {
            state.borrow_mut().mesh.outboxes().poll_batch(peer, cx)
        })
        .await;
        let Some(batch) = batch else { return };
        ShardStats::inc(&state.borrow().stats.mesh_batches);
        if senders.send_to(usize::from(peer), batch).await.is_err() {
            return; // the peer is gone (shutdown)
        }
    }
}

async fn recv_loop(state: Rc<RefCell<State>>, rx: ConnectedReceiver<Vec<MeshMsg>>, peer: usize) {
    while let Some(batch) = rx.recv().await {
        with_state(&state, |st| {
            // One clock reading per batch.
            let now = Instant::now();
            for msg in batch {
                st.handle_mesh(msg, now);
            }
        });
    }
    // The peer is gone: every answer it sent is in, and what still waits on it never comes.
    let peer = ShardId(u16::try_from(peer).unwrap_or(u16::MAX));
    with_state(&state, |st| st.fail_publish_waiters(peer));
}

async fn ctl_loop(state: Rc<RefCell<State>>, rx: flume::Receiver<Ctl>) {
    while let Ok(ctl) = rx.recv_async().await {
        let mut st = state.borrow_mut();
        match ctl {
            Ctl::Drained(sub) => st.drained(sub, Instant::now()),
            Ctl::Unsubscribe(sub) => st.remove_sub(sub, None, Instant::now()),
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
        with_state(&state, |st| st.tick(Instant::now()));
    }
}
