//! Messages, the events a subscriber receives, and the errors of each operation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_proto::{Durability, ErrorCode, NameError};
use thiserror::Error;

use crate::ids::{BadTopicName, Epoch, LocalTopicId, Seq, SubId};

/// One published message. Cloning it shares the payload (a reference count, no copy).
/// Equality compares the message, not when this process saw it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic's epoch when it was published.
    pub epoch: Epoch,
    /// Its sequence within the epoch.
    pub seq: Seq,
    /// The body.
    pub payload: Bytes,
    /// Who published it, when the broker knows (a token's subject).
    pub publisher_id: Option<Arc<str>>,
    /// When the owner ordered it (this process's monotonic clock), for latency metrics.
    pub published_at: Instant,
}

impl Message {
    /// A message ordered now.
    pub fn new(epoch: Epoch, seq: Seq, payload: Bytes, publisher_id: Option<Arc<str>>) -> Self {
        Self::ordered_at(epoch, seq, payload, publisher_id, Instant::now())
    }

    /// A message ordered at `published_at` (a clock reading the caller already has: a
    /// WebSocket reads the clock once per socket read, for every publish in it; any other
    /// publish is ordered at a reading of its own).
    pub fn ordered_at(
        epoch: Epoch,
        seq: Seq,
        payload: Bytes,
        publisher_id: Option<Arc<str>>,
        published_at: Instant,
    ) -> Self {
        Self {
            epoch,
            seq,
            payload,
            publisher_id,
            published_at,
        }
    }
}

impl PartialEq for Message {
    fn eq(&self, o: &Self) -> bool {
        (self.epoch, self.seq, &self.payload, &self.publisher_id)
            == (o.epoch, o.seq, &o.payload, &o.publisher_id)
    }
}

impl Eq for Message {}

/// Who publishes, and the key that makes retries of one publish idempotent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishMeta {
    /// The publisher's identity (a token's subject), stamped on the message; it also scopes
    /// the idempotency key, so two publishers' keys never collide.
    pub publisher: Option<Arc<str>>,
    /// A client-chosen key (at most 128 bytes): a publish repeating a recent key of the same
    /// publisher on the same topic is answered with the original `(epoch, seq)` and orders no
    /// new message (see `Config::idempotency_window`).
    pub idempotency_key: Option<Arc<str>>,
}

impl PublishMeta {
    /// Metadata naming the publisher only.
    pub fn by(publisher: Option<Arc<str>>) -> Self {
        Self {
            publisher,
            idempotency_key: None,
        }
    }
}

/// Where a published message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The topic's epoch.
    pub epoch: Epoch,
    /// The message's sequence.
    pub seq: Seq,
    /// How the owner kept it when it answered.
    pub durability: Durability,
}

/// What a library subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The next message.
    Item(Message),
    /// Messages were missed and will never arrive: everything after `last_seq` (in the epoch
    /// the subscriber had) up to `new_seq - 1` in `new_epoch`. Delivery goes on at `new_seq`.
    Discontinuity {
        /// The last sequence delivered or resumed from.
        last_seq: Seq,
        /// The next sequence that will be delivered.
        new_seq: Seq,
        /// The epoch `new_seq` belongs to.
        new_epoch: Epoch,
    },
    /// The subscription is alive but its topic was quiet for a heartbeat interval.
    Heartbeat {
        /// The topic's epoch.
        epoch: Epoch,
        /// The next sequence the subscription will deliver.
        next_seq: Seq,
    },
    /// A presence event the subscription asked for.
    Presence(crate::presence::PresenceEvent),
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The subscriber asked.
    #[error("unsubscribed")]
    Unsubscribed,
    /// The broker is shutting down.
    #[error("broker shutting down")]
    ShuttingDown,
    /// Its queue stayed full for longer than the lag limit.
    #[error("subscriber stayed behind for {0:?}, over the limit")]
    TooSlow(Duration),
    /// The subscription could not start.
    #[error("subscribe failed: {0}")]
    Failed(SubscribeError),
}

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A namespace or topic name breaks the rules.
    #[error("invalid {field}: {source}")]
    InvalidName {
        /// `namespace` or `topic`.
        field: &'static str,
        /// What is wrong.
        source: NameError,
    },
    /// The payload is over the message size limit.
    #[error("message of {len} bytes over the limit of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The owning shard holds its maximum number of topics.
    #[error("topic limit of {max} per shard reached")]
    TopicLimit {
        /// The limit.
        max: usize,
    },
    /// The broker is shutting down.
    #[error("broker shutting down")]
    ShuttingDown,
    /// The topic's owner is another node that cannot be reached now (cluster failover under
    /// way, or no storage node alive). The message may or may not have been ordered when the
    /// link dropped after sending it; retrying can duplicate it.
    #[error("the topic's owner is unavailable; retry")]
    Unavailable,
    /// The topic's owner (another node) refused.
    #[error("the topic's owner refused: {reason}")]
    Owner {
        /// Its error code.
        code: ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// The owning shard's log failed (an I/O error, the disk full): the message was not
    /// stored, nor published. Topics of other shards go on working.
    #[error("the topic's storage is unavailable (its log failed; see the broker's log)")]
    StorageUnavailable,
    /// The owning shard's disk is behind: more publishes wait for the next write than
    /// `StorageConfig::backlog_bytes_max` allows. Retry shortly.
    #[error("the topic's storage is {bytes} bytes behind, over the limit of {max}; retry")]
    StorageBacklog {
        /// Bytes waiting.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

impl PublishError {
    /// The wire error code a server answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            PublishError::InvalidName { .. } => ErrorCode::InvalidName,
            PublishError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            PublishError::TopicLimit { .. } => ErrorCode::TopicLimit,
            PublishError::ShuttingDown => ErrorCode::ShuttingDown,
            PublishError::Unavailable => ErrorCode::Unavailable,
            PublishError::Owner { code, .. } => *code,
            PublishError::StorageUnavailable => ErrorCode::StorageUnavailable,
            PublishError::StorageBacklog { .. } => ErrorCode::Overloaded,
        }
    }
}

/// Why a subscribe failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A namespace or topic name breaks the rules.
    #[error("invalid {field}: {source}")]
    InvalidName {
        /// `namespace` or `topic`.
        field: &'static str,
        /// What is wrong.
        source: NameError,
    },
    /// The owning shard holds its maximum number of topics.
    #[error("topic limit of {max} per shard reached")]
    TopicLimit {
        /// The limit.
        max: usize,
    },
    /// The shard holds its maximum number of subscriptions.
    #[error("subscription limit of {max} per shard reached")]
    TooManySubscriptions {
        /// The limit.
        max: usize,
    },
    /// The resume position is ahead of the topic's head in the same epoch.
    #[error("resume position {requested:?} is ahead of the topic's next sequence {next:?}")]
    InvalidResume {
        /// What was asked.
        requested: Seq,
        /// The topic's next sequence.
        next: Seq,
    },
    /// The broker is shutting down.
    #[error("broker shutting down")]
    ShuttingDown,
    /// No storage node is alive to own the topic, or its owner cannot be reached.
    #[error("the topic's owner is unavailable; retry")]
    Unavailable,
    /// The topic's owner (another node) refused.
    #[error("the topic's owner refused: {reason}")]
    Owner {
        /// Its error code.
        code: ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// The presence info blob is over `Config::presence_info_bytes_max`.
    #[error("presence info of {len} bytes over the limit of {max}")]
    PresenceInfoTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl SubscribeError {
    /// The wire error code a server answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            SubscribeError::InvalidName { .. } => ErrorCode::InvalidName,
            SubscribeError::TopicLimit { .. } => ErrorCode::TopicLimit,
            SubscribeError::TooManySubscriptions { .. } => ErrorCode::TooManySubscriptions,
            SubscribeError::InvalidResume { .. } => ErrorCode::InvalidResume,
            SubscribeError::ShuttingDown => ErrorCode::ShuttingDown,
            SubscribeError::Unavailable => ErrorCode::Unavailable,
            SubscribeError::Owner { code, .. } => *code,
            SubscribeError::PresenceInfoTooLarge { .. } => ErrorCode::BadRequest,
        }
    }
}

/// Why the broker did not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A shard's executor could not start (for example pinning to a missing CPU).
    #[error("shard {shard} failed to start: {reason}")]
    Shard {
        /// Which shard (thread index).
        shard: usize,
        /// What went wrong.
        reason: String,
    },
}

/// A subscription id and the local topic id its items carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeAccepted {
    /// The subscription.
    pub sub: SubId,
    /// The topic's id on this shard.
    pub topic: LocalTopicId,
}

impl From<BadTopicName> for PublishError {
    fn from(e: BadTopicName) -> Self {
        PublishError::InvalidName {
            field: e.field,
            source: e.source,
        }
    }
}

impl From<BadTopicName> for SubscribeError {
    fn from(e: BadTopicName) -> Self {
        SubscribeError::InvalidName {
            field: e.field,
            source: e.source,
        }
    }
}
