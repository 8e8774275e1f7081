//! The shard's durable side as data: its [`Store`] (the log and the publishes waiting on it)
//! and the types its callers share. The behaviour is in `store.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use fanfare_proto::Durability;

use crate::config::StorageConfig;
use crate::ids::TopicKey;
use crate::log::Log;
use crate::message::{Message, PublishError, Published};

/// Where the publisher's answer goes.
pub(crate) type Answer = flume::Sender<Result<Published, PublishError>>;

/// A publish ordered and appended, waiting for its batch to be durable.
pub(crate) struct Waiting {
    pub ticket: u64,
    pub key: TopicKey,
    pub msg: Message,
    pub idempotency_key: Option<Arc<str>>,
    pub answer: Option<Answer>,
}

/// One segment as retention sees it.
pub(crate) struct SegInfo {
    pub id: u64,
    pub bytes: u64,
    /// The newest record's timestamp (µs since the Unix epoch).
    pub newest_us: u64,
}

/// A shard's log and what waits on it.
pub(crate) struct Store {
    pub log: Log,
    pub cfg: StorageConfig,
    pub waiting: VecDeque<Waiting>,
    /// `store_loop`'s waker, while it waits for work.
    pub waker: Option<Waker>,
    pub segs: VecDeque<SegInfo>,
    /// Segments retention gave up, for `store_loop` to delete.
    pub doomed: VecDeque<u64>,
    /// What an acknowledgement promises.
    pub durability: Durability,
}

/// How a publish was ordered.
pub(crate) enum Ordered {
    /// Answered now (no data dir).
    Done(Published),
    /// Appended to the log: answered when durable, through [`State::answer_when_stored`].
    Stored,
}

impl Store {
    /// Wakes `store_loop` (new work, or the shard is stopping).
    pub(crate) fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Publishes waiting for the disk.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}
