//! [`ShardHandle`]: the API of the shard the caller runs on, for code inside a shard's
//! executor (the network front, embedders running on a shard through `Broker::run_on`).
//!
//! The calls node links make (views, upstream answers, publishes and subscriptions "here")
//! are not on it: they live on `ClusterPort` (`port.rs`).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fanfare_proto::{Name, Start};

use crate::config::Config;
use crate::ids::{ShardId, SubId, TopicKey};
use crate::message::{PublishError, PublishMeta, Published, SubscribeAccepted, SubscribeError};
use crate::presence::{PresenceOptions, PresenceQuery, PresenceState};
use crate::shard::disk::{Answer, PublishCallback};
use crate::shard::owned::OwnedTopicInfo;
use crate::shard::presence::QueryStarted;
use crate::shard::router::PublishStarted;
use crate::shard::state::{with_state, State};
use crate::signal::SignalWait;
use crate::sink::Sink;
use crate::stats::ShardStats;
use crate::tasks::Tasks;

/// A handle to the shard the caller runs on. Not `Send`: it is only valid on its own shard's
/// thread.
#[derive(Clone)]
pub struct ShardHandle {
    pub(crate) state: Rc<RefCell<State>>,
    /// The shard's spawner, outside the state: a task can be spawned from anywhere on the
    /// shard, a callback running inside the engine included.
    pub(crate) tasks: Tasks,
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

    /// This shard's task spawner: run a task on the shard under a [`TaskKind`]
    /// (named, counted, in its task queue). Usable anywhere on the shard, from inside the
    /// engine's callbacks too (it does not touch the shard's state).
    ///
    /// [`TaskKind`]: crate::TaskKind
    pub fn tasks(&self) -> Tasks {
        self.tasks.clone()
    }

    /// A checked topic key for names that did not come through the wire decoders (which
    /// return checked [`fanfare_proto::Name`]s: use [`TopicKey::from_names`] for those).
    pub fn topic_key(&self, namespace: &str, topic: &str) -> Result<TopicKey, SubscribeError> {
        let max = self.state.borrow().cfg.name_bytes_max;
        Ok(TopicKey::parse(namespace, topic, max)?)
    }

    /// The key of `namespace/topic`: the shard's own key when it knows the topic (it owns it
    /// or has subscribers to it: one reference count, no allocation), a new one otherwise.
    pub fn key_of(&self, namespace: &Name, topic: &Name) -> TopicKey {
        let st = self.state.borrow();
        TopicKey::with_joined(namespace, topic, |joined| {
            st.local
                .known_key(joined)
                .or_else(|| st.owned.known_key(joined))
                .cloned()
        })
        .unwrap_or_else(|| TopicKey::from_names(namespace, topic))
    }

    /// Publishes `payload` to `key`; resolves once the owner (in a cluster, the owning node)
    /// ordered it.
    pub fn publish(
        &self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
    ) -> impl Future<Output = Result<Published, PublishError>> + 'static {
        publish(&self.state, key, payload, meta, false)
    }

    /// Takes a publish without waiting: ordered already when this shard owns the topic (no
    /// task, no channel: the caller can answer at once), or on its way to the owning shard or
    /// node. The fast path of [`ShardHandle::publish`].
    pub fn start_publish(
        &self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
    ) -> Result<StartedPublish, PublishError> {
        self.start_publish_at(key, payload, meta, Instant::now())
    }

    /// [`ShardHandle::start_publish`] with the caller's clock reading: a connection reading
    /// a batch of publishes reads the clock once for all of them (`now` becomes the
    /// messages' `published_at` and the topic's clock for history age and idempotency).
    pub fn start_publish_at(
        &self,
        key: TopicKey,
        payload: Bytes,
        meta: PublishMeta,
        now: Instant,
    ) -> Result<StartedPublish, PublishError> {
        let started = self
            .state
            .borrow_mut()
            .publish(key, payload, meta, false, now)?;
        Ok(match started {
            PublishStarted::Done(p) => StartedPublish::Done(p),
            PublishStarted::Waiting(rx) => StartedPublish::Pending(PendingPublish { rx }),
            PublishStarted::Stored(ticket) => StartedPublish::Later(LaterPublish {
                ticket,
                forwarded: false,
            }),
            PublishStarted::Forwarded(ticket) => StartedPublish::Later(LaterPublish {
                ticket,
                forwarded: true,
            }),
        })
    }

    /// Has the answer to a publish answered later on this shard ([`StartedPublish::Later`]:
    /// waiting for this shard's disk, or for the owning shard's answer through the mesh)
    /// delivered to `then`, on this shard: no task and no channel. `then` runs right after
    /// the engine's step that answered it, with the shard's state no longer borrowed (so it may
    /// call into the shard; queueing a reply on a connection is what it is for).
    pub fn when_answered(&self, publish: LaterPublish, then: PublishCallback) {
        with_state(&self.state, |st| {
            if publish.forwarded {
                st.answer_when_forwarded(publish.ticket, Answer::Call(then));
            } else {
                st.answer_when_stored(publish.ticket, Answer::Call(then));
            }
        });
    }

    /// Subscribes `sink` to `key` from `start`. Events follow on the sink, starting with
    /// `Subscribed` (or `Closed` if the owner refuses).
    pub fn subscribe(
        &self,
        key: TopicKey,
        start: Start,
        sink: Rc<dyn Sink>,
    ) -> Result<SubscribeAccepted, SubscribeError> {
        self.subscribe_with(key, start, sink, PresenceOptions::default())
    }

    /// [`ShardHandle::subscribe`] with presence options: listed as a member while subscribed
    /// (`Subscribed` carries the member id), and presence events on the sink.
    pub fn subscribe_with(
        &self,
        key: TopicKey,
        start: Start,
        sink: Rc<dyn Sink>,
        presence: PresenceOptions,
    ) -> Result<SubscribeAccepted, SubscribeError> {
        self.state
            .borrow_mut()
            .subscribe(key, start, sink, false, presence, Instant::now())
    }

    /// The presence of `key`, cluster-wide: its occupancy and, when asked, a page of members.
    pub fn presence(
        &self,
        key: TopicKey,
        q: PresenceQuery,
    ) -> impl Future<Output = Result<PresenceState, SubscribeError>> + 'static {
        query(&self.state, key, q, false)
    }

    /// Ends a subscription (no `Closed` event follows).
    pub fn unsubscribe(&self, sub: SubId) {
        self.state
            .borrow_mut()
            .remove_sub(sub, None, Instant::now());
    }

    /// Tells the engine a subscriber that refused an item (`Accept::Full`) has room again.
    pub fn drained(&self, sub: SubId) {
        self.state.borrow_mut().drained(sub, Instant::now());
    }

    /// Whether the broker is shutting down.
    pub fn is_closing(&self) -> bool {
        self.state.borrow().closing
    }

    /// Topics this shard owns whose `namespace/topic` starts with `prefix`: how many match,
    /// and the first `limit` of them in name order. Walks every owned topic (for the admin
    /// view, not the data path).
    pub fn owned_topics(&self, prefix: &str, limit: usize) -> (usize, Vec<OwnedTopicInfo>) {
        self.state.borrow().owned.info(prefix, limit)
    }

    /// Subscriptions on this shard to `namespace/topic` (0 for invalid names).
    pub fn local_subscribers(&self, namespace: &str, topic: &str) -> usize {
        let st = self.state.borrow();
        match TopicKey::parse(namespace, topic, st.cfg.name_bytes_max) {
            Ok(key) => st.local.topic(&key).map_or(0, |t| t.subs().len()),
            Err(_) => 0,
        }
    }

    /// Marks work in progress (a connection) that shutdown waits for, up to the engine's
    /// `drain_timeout`, after it signals [`ShardHandle::shutdown_signal`]: the work ends itself
    /// on that signal and drops the guard. Without it, a shard could stop while a connection
    /// still had answers to send.
    pub fn hold(&self) -> Hold {
        self.state.borrow_mut().holds += 1;
        Hold {
            state: self.state.clone(),
        }
    }

    /// Resolves when the broker starts shutting down. Cheap to poll repeatedly: the future
    /// holds one waker slot however often it is polled.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + 'static {
        SignalWait::new(self.state.borrow().shutdown.clone())
    }
}

/// A publish a shard took ([`ShardHandle::start_publish`]).
#[derive(Debug)]
pub enum StartedPublish {
    /// Ordered on this shard: the answer.
    Done(Published),
    /// Sent to the owning node; [`PendingPublish::answer`] resolves with its answer.
    Pending(PendingPublish),
    /// Answered later on this shard: ordered here and waiting for this shard's disk, or
    /// forwarded to the owning shard of this node. [`ShardHandle::when_answered`] names where
    /// its answer goes; dropping it without doing so loses the answer, not the publish.
    Later(LaterPublish),
}

/// A publish whose answer comes later on this shard ([`StartedPublish::Later`]).
#[derive(Debug)]
pub struct LaterPublish {
    ticket: u64,
    /// Forwarded to another shard (else: waiting for this shard's disk).
    forwarded: bool,
}

/// A publish waiting for its owner's answer.
#[derive(Debug)]
pub struct PendingPublish {
    rx: flume::Receiver<Result<Published, PublishError>>,
}

impl PendingPublish {
    /// The owner's answer (`ShuttingDown` if the owner stopped before answering).
    pub async fn answer(self) -> Result<Published, PublishError> {
        self.rx
            .recv_async()
            .await
            .unwrap_or(Err(PublishError::ShuttingDown))
    }
}

/// Work in progress that shutdown waits for; dropping it ends the hold.
pub struct Hold {
    state: Rc<RefCell<State>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut st = self.state.borrow_mut();
        st.holds = st.holds.saturating_sub(1);
    }
}

/// Starts a presence query on the shard and returns the future of its answer. `here`: asked
/// on this node whatever the cluster view says.
pub(crate) fn query(
    state: &Rc<RefCell<State>>,
    key: TopicKey,
    q: PresenceQuery,
    here: bool,
) -> impl Future<Output = Result<PresenceState, SubscribeError>> + 'static {
    let started = state.borrow_mut().presence_query(key, q, here);
    async move {
        match started? {
            QueryStarted::Done(p) => Ok(p),
            QueryStarted::Waiting(rx) => rx
                .recv_async()
                .await
                .unwrap_or(Err(SubscribeError::ShuttingDown)),
        }
    }
}

/// Starts a publish on the shard and returns the future of its answer (the shard is not
/// borrowed while it waits). `here`: ordered on this node whatever the cluster view says.
pub(crate) fn publish(
    state: &Rc<RefCell<State>>,
    key: TopicKey,
    payload: Bytes,
    meta: PublishMeta,
    here: bool,
) -> impl Future<Output = Result<Published, PublishError>> + 'static {
    // Done, or the channel its answer comes on (a publish waiting for this shard's disk is
    // given one here).
    let started = {
        let mut st = state.borrow_mut();
        st.publish(key, payload, meta, here, Instant::now())
            .map(|started| match started {
                PublishStarted::Done(p) => Ok(p),
                PublishStarted::Waiting(rx) => Err(rx),
                PublishStarted::Stored(ticket) => {
                    let (tx, rx) = flume::bounded(1);
                    st.answer_when_stored(ticket, Answer::Channel(tx));
                    Err(rx)
                }
                PublishStarted::Forwarded(ticket) => {
                    let (tx, rx) = flume::bounded(1);
                    st.answer_when_forwarded(ticket, Answer::Channel(tx));
                    Err(rx)
                }
            })
    };
    async move {
        match started? {
            Ok(p) => Ok(p),
            Err(rx) => rx
                .recv_async()
                .await
                .unwrap_or(Err(PublishError::ShuttingDown)),
        }
    }
}
