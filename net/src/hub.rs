//! Every shard's admin inbox: how the shard serving an admin request asks every shard
//! (shared-nothing: no shard reads another's state).

use std::sync::{Arc, Mutex};

use fanfare_core::OwnedTopicInfo;

/// Admin requests queued per shard; past it, requests are answered 503.
pub const ADMIN_QUEUE_MAX: usize = 16;

pub(crate) type TopicKeys = Arc<Vec<(String, String)>>;

/// A question to one shard.
pub(crate) enum AdminReq {
    /// Owned topics matching a prefix: how many, and the first `limit` in name order.
    Owned {
        prefix: Arc<str>,
        limit: usize,
        reply: flume::Sender<(usize, Vec<OwnedTopicInfo>)>,
    },
    /// Local subscriber counts of these topics, in order.
    Subscribers {
        keys: TopicKeys,
        reply: flume::Sender<Vec<usize>>,
    },
}

/// Every shard's admin inbox, filled in as shards start.
#[derive(Debug, Default)]
pub(crate) struct AdminHub {
    shards: Mutex<Vec<Option<flume::Sender<AdminReq>>>>,
}

impl AdminHub {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: Mutex::new(vec![None; shards]),
        }
    }

    /// Registers `shard`'s inbox; returns its receiving end.
    pub(crate) fn register(&self, shard: usize) -> flume::Receiver<AdminReq> {
        let (tx, rx) = flume::bounded(ADMIN_QUEUE_MAX);
        let mut s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.get_mut(shard) {
            *slot = Some(tx);
        }
        rx
    }

    pub(crate) fn senders(&self) -> Vec<(usize, flume::Sender<AdminReq>)> {
        let s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .enumerate()
            .filter_map(|(i, t)| t.clone().map(|t| (i, t)))
            .collect()
    }
}
