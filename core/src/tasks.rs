//! A shard's tasks, named and placed. Every task a shard runs is spawned through
//! [`Tasks::spawn`] with a [`TaskKind`], which says what it is, whether the shard depends on it
//! ([`TaskKind::critical`]) and which of the shard's two glommio task queues it runs in
//! ([`TaskClass`]):
//!
//! - [`TaskClass::Serve`], the executor's default queue: connections, the mesh, the tick, the
//!   commands of library callers, node links: what a delivery waits for.
//! - [`TaskClass::Background`], a queue of its own with [`BACKGROUND_SHARES`] shares against
//!   the default queue's 1000 and no latency requirement: the log's I/O loop, catch-up reads from
//!   disk, giving memory back to the system, cluster membership, the admin inbox. The
//!   executor runs it when the serving queue is idle, and otherwise for about a tenth of the
//!   time, so a burst of disk reads or a `malloc_trim` never sits in front of fan-out. (A task
//!   that blocks the thread still blocks it: queues order work, they cannot preempt a call.)
//!
//! Each kind's tasks are counted ([`TaskStats`]: running now, started, and critical tasks that
//! ended before shutdown), and exported as `fanfare_tasks_running{task=..}` and friends. Shutdown
//! stops them in stages (`shard/run.rs`): no new work, connections drain, subscriptions close,
//! the mesh flushes and closes, the log's loop finishes what waits for the disk; whatever is
//! still running then is counted and named in the log, and ends with the executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use glommio::{Latency, Shares, TaskQueueHandle};

/// Shares of the background task queue, against the default queue's 1000.
pub const BACKGROUND_SHARES: usize = 100;

/// Which task queue a task runs in (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskClass {
    /// The executor's default queue: what deliveries wait for.
    Serve,
    /// The background queue: work that can wait behind serving.
    Background,
}

macro_rules! kinds {
    ($($(#[$m:meta])* $kind:ident => $name:literal, $class:ident, $critical:literal;)*) => {
        /// What a shard's task is.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum TaskKind {
            $($(#[$m])* $kind,)*
        }

        impl TaskKind {
            /// Every kind, in the order of [`TaskStats`]'s arrays.
            pub const ALL: &'static [TaskKind] = &[$(TaskKind::$kind,)*];

            /// Its name in metrics and logs.
            pub fn name(self) -> &'static str {
                match self { $(TaskKind::$kind => $name,)* }
            }

            /// The task queue it runs in.
            pub fn class(self) -> TaskClass {
                match self { $(TaskKind::$kind => TaskClass::$class,)* }
            }

            /// Whether the shard depends on it: one that ends before shutdown is an error
            /// (logged, and counted in `fanfare_tasks_failed`).
            pub fn critical(self) -> bool {
                match self { $(TaskKind::$kind => $critical,)* }
            }
        }
    };
}

kinds! {
    /// Sends a shard's outbox to one peer shard.
    MeshFlush => "mesh_flush", Serve, true;
    /// Takes what one peer shard sends.
    MeshRecv => "mesh_recv", Serve, true;
    /// Library subscribers' control messages (drained, unsubscribe).
    Control => "control", Serve, true;
    /// Heartbeats, lag limits, the sweep of owned topics.
    Tick => "tick", Serve, true;
    /// The log's I/O: appends, syncs, segment deletion.
    StoreLoop => "store", Background, true;
    /// Catch-up reads from the log.
    DiskReads => "disk_reads", Background, true;
    /// Accepts client connections.
    Accept => "accept", Serve, true;
    /// One client connection.
    Connection => "connection", Serve, false;
    /// Answers a connection over the limit and closes it.
    Refuse => "refuse", Serve, false;
    /// Connections' periodic checks (pings, idle and slow deadlines) and metrics snapshots.
    ConnSweep => "conn_sweep", Serve, true;
    /// Gives memory freed by closed connections back to the system (`malloc_trim`).
    Trim => "trim", Background, false;
    /// The admin API's requests to this shard.
    Admin => "admin", Background, true;
    /// Accepts node links (cluster).
    LinkAccept => "link_accept", Serve, true;
    /// One node link, either end (cluster).
    Link => "link", Serve, false;
    /// A node link's session work: a subscription or request it serves (cluster).
    LinkWork => "link_work", Serve, false;
    /// Cluster membership: gossip, failure detection, views.
    Membership => "membership", Background, true;
    /// Membership's helpers: datagrams in, timers, re-announcing, taking new views.
    MembershipWork => "membership_work", Background, false;
    /// A client's request waiting for an answer from another shard or node (a publish to
    /// another node, a presence query, an HTTP/2 stream).
    Request => "request", Serve, false;
    /// Work an embedder runs on the shard (`Broker::run_on`).
    Embedder => "embedder", Serve, false;
}

/// Counts of a shard's tasks by kind (indexed like [`TaskKind::ALL`]). Written by its own
/// shard, read by anyone (metrics).
#[derive(Debug)]
pub struct TaskStats {
    running: Vec<AtomicU64>,
    started: Vec<AtomicU64>,
    failed: Vec<AtomicU64>,
}

impl Default for TaskStats {
    fn default() -> Self {
        let zeros = || TaskKind::ALL.iter().map(|_| AtomicU64::new(0)).collect();
        TaskStats {
            running: zeros(),
            started: zeros(),
            failed: zeros(),
        }
    }
}

/// One kind's counts at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCounts {
    /// The kind.
    pub kind: TaskKind,
    /// Running now.
    pub running: u64,
    /// Started since the shard started.
    pub started: u64,
    /// Critical tasks of the kind that ended before shutdown.
    pub failed: u64,
}

impl TaskStats {
    fn index(kind: TaskKind) -> usize {
        // `ALL` lists every variant (the macro builds both): the search cannot miss.
        TaskKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
    }

    /// Every kind's counts.
    pub fn snapshot(&self) -> Vec<TaskCounts> {
        TaskKind::ALL
            .iter()
            .enumerate()
            .map(|(i, &kind)| TaskCounts {
                kind,
                running: self.running[i].load(Ordering::Relaxed),
                started: self.started[i].load(Ordering::Relaxed),
                failed: self.failed[i].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Tasks of `kind` running now.
    pub fn running(&self, kind: TaskKind) -> u64 {
        self.running[Self::index(kind)].load(Ordering::Relaxed)
    }

    fn bump(c: &AtomicU64, up: bool) {
        let v = c.load(Ordering::Relaxed);
        c.store(
            if up { v + 1 } else { v.saturating_sub(1) },
            Ordering::Relaxed,
        );
    }
}

/// A shard's task spawner (see the module docs). Cheap to clone; valid only on its shard.
#[derive(Clone)]
pub struct Tasks {
    /// The executor's default queue (where the shard's own loop runs).
    serve: TaskQueueHandle,
    background: Option<TaskQueueHandle>,
    stats: Arc<TaskStats>,
    /// Shutdown has begun: critical tasks may end now.
    stopping: Rc<Cell<bool>>,
}

impl Tasks {
    /// The spawner of the shard this runs on, called from the shard's own loop (in the
    /// executor's default queue): creates its background task queue.
    pub(crate) fn new() -> Self {
        let background = glommio::executor().create_task_queue(
            Shares::Static(BACKGROUND_SHARES),
            Latency::NotImportant,
            "fanfare-background",
        );
        Tasks {
            serve: glommio::executor().current_task_queue(),
            background: Some(background),
            stats: Arc::new(TaskStats::default()),
            stopping: Rc::new(Cell::new(false)),
        }
    }

    /// The counts of this shard's tasks.
    pub fn stats(&self) -> Arc<TaskStats> {
        self.stats.clone()
    }

    /// Shutdown has begun: critical tasks that end from now on are not errors.
    pub(crate) fn stopping(&self) {
        self.stopping.set(true);
    }

    /// Runs `fut` as a task of `kind` in its task queue, counted while it runs. Dropping the
    /// returned handle cancels the task; `.detach()` lets it run on.
    pub fn spawn<T: 'static>(
        &self,
        kind: TaskKind,
        fut: impl Future<Output = T> + 'static,
    ) -> glommio::Task<T> {
        let i = TaskStats::index(kind);
        TaskStats::bump(&self.stats.started[i], true);
        TaskStats::bump(&self.stats.running[i], true);
        let guard = Running {
            kind,
            i,
            stats: self.stats.clone(),
            stopping: self.stopping.clone(),
            finished: false,
        };
        let task = async move {
            let mut guard = guard;
            let out = fut.await;
            guard.finished = true;
            out
        };
        let queue = match kind.class() {
            TaskClass::Serve => self.serve,
            TaskClass::Background => self.background.unwrap_or(self.serve),
        };
        // `spawn_local` places a task in the queue of the task that spawns it: right when that
        // is the kind's queue (the common case, and the cheapest spawn), not otherwise.
        if glommio::executor().current_task_queue() == queue {
            return glommio::spawn_local(task);
        }
        // Handed over through a cell, so that the task survives a refused spawn.
        let cell = Rc::new(RefCell::new(Some(task)));
        let taken = cell.clone();
        let lazy = async move {
            let task = taken.borrow_mut().take();
            match task {
                Some(task) => task.await,
                // Taken only here, once, by the task that runs it.
                None => std::future::pending().await,
            }
        };
        match glommio::spawn_local_into(lazy, queue) {
            Ok(t) => t,
            // Only an unknown queue handle is refused, and both were made on this executor;
            // were one gone, the task still runs, in the spawning task's queue.
            Err(e) => {
                tracing::warn!(task = kind.name(), error = %e, "a task queue is gone: running in the current one");
                let task = cell.borrow_mut().take();
                glommio::spawn_local(async move {
                    match task {
                        Some(task) => task.await,
                        None => std::future::pending().await,
                    }
                })
            }
        }
    }
}

/// Counts a task while it runs (dropped when it ends or is cancelled).
struct Running {
    kind: TaskKind,
    i: usize,
    stats: Arc<TaskStats>,
    stopping: Rc<Cell<bool>>,
    /// The task's future completed (else it was cancelled).
    finished: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        TaskStats::bump(&self.stats.running[self.i], false);
        if self.kind.critical() && self.finished && !self.stopping.get() {
            TaskStats::bump(&self.stats.failed[self.i], true);
            tracing::error!(
                task = self.kind.name(),
                "a task the shard depends on ended before shutdown"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    fn on_executor(
        f: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()>>> + Send + 'static,
    ) {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move { f().await })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn tasks_run_in_their_queues_counted_and_a_critical_one_ending_early_is_failed() {
        on_executor(|| {
            Box::pin(async {
                let tasks = Tasks::new();
                let serve = glommio::executor().current_task_queue();
                // Each kind's task runs in its class's queue, whoever spawns it.
                let bg = tasks.spawn(TaskKind::Trim, async {
                    glommio::executor().current_task_queue()
                });
                let bg_queue = bg.await;
                assert_ne!(
                    bg_queue, serve,
                    "a background task runs in the background queue"
                );
                let t = tasks.clone();
                let from_bg = tasks
                    .spawn(TaskKind::Trim, async move {
                        t.spawn(TaskKind::Connection, async {
                            glommio::executor().current_task_queue()
                        })
                        .await
                    })
                    .await;
                assert_eq!(
                    from_bg, serve,
                    "a serving task spawned from the background serves"
                );
                let stats = tasks.stats();
                // Counted while running.
                let (tx, rx) = flume::bounded::<()>(1);
                let conn = tasks.spawn(TaskKind::Connection, async move {
                    let _ = rx.recv_async().await;
                });
                assert_eq!(stats.running(TaskKind::Connection), 1);
                drop(tx);
                conn.await;
                assert_eq!(stats.running(TaskKind::Connection), 0);
                // A critical task that ends before shutdown is failed; after, it is not.
                tasks.spawn(TaskKind::Tick, async {}).await;
                tasks.stopping();
                tasks.spawn(TaskKind::Tick, async {}).await;
                let tick = stats
                    .snapshot()
                    .into_iter()
                    .find(|c| c.kind == TaskKind::Tick)
                    .unwrap();
                assert_eq!((tick.started, tick.running, tick.failed), (2, 0, 1));
                // A non-critical one never is.
                let conn = stats
                    .snapshot()
                    .into_iter()
                    .find(|c| c.kind == TaskKind::Connection)
                    .unwrap();
                assert_eq!(conn.failed, 0);
            })
        });
    }
}
