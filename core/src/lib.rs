//! Fanfare's engine: a shared-nothing, thread-per-core pub/sub core you can embed.
//!
//! A [`Broker`] runs one glommio (io_uring) executor per shard. Topics are placed on shards by
//! rendezvous hashing ([`placement`]); the owning shard assigns each message of a topic the
//! next sequence number in the topic's epoch, keeps a bounded history, and sends the message
//! once to every shard that has subscribers for it. Each shard hands it to its local
//! subscribers without copying the payload ([`sink`]).
//!
//! Subscribers start from the latest message, the last N, or a resume position
//! `(epoch, seq)`. When history covers the gap they get every message once, in order; when
//! it does not, exactly one [`Event::Discontinuity`] says what was lost. A slow subscriber
//! never slows a topic: its queue is bounded, it skips ahead when full, and catches up from
//! history (or is told of a discontinuity) when it drains.
//!
//! ```
//! use fanfare_core::{Broker, Event, Start};
//!
//! let broker = Broker::builder().shards(2).start()?;
//! broker.publish_blocking("chat", "room-1", "first")?;
//! let mut sub = broker.subscribe_blocking("chat", "room-1", Start::LastN(10))?;
//! broker.publish_blocking("chat", "room-1", "second")?;
//! for want in ["first", "second"] {
//!     let Some(Event::Item(m)) = sub.next_blocking() else { panic!() };
//!     assert_eq!(m.payload, want);
//! }
//! broker.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! From async code (any runtime), use [`Broker::publish`] and [`Broker::subscribe`]; a
//! [`Subscription`] is a `futures_core::Stream` of [`Event`]s.
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod broker;
pub mod cluster;
pub mod config;
pub mod history;
pub mod ids;
pub mod log;
pub mod message;
pub mod placement;
pub mod presence;
mod shard;
mod signal;
pub mod sink;
pub mod stats;
pub mod tasks;

pub use broker::{Broker, BrokerBuilder, Subscription};
pub use config::{Config, Fsync, StorageConfig};
pub use fanfare_proto::Durability;
pub use fanfare_proto::Start;
pub use ids::{BadTopicName, Epoch, LocalTopicId, Seq, ShardId, SubId, TopicKey};
pub use message::{
    CloseReason, Event, Message, PublishError, PublishMeta, Published, StartError,
    SubscribeAccepted, SubscribeError,
};
pub use presence::{
    Member, MemberId, PresenceAction, PresenceEvent, PresenceOptions, PresenceQuery, PresenceState,
};
pub use shard::{
    ClusterPort, FetchCallback, Hold, LaterPublish, OwnedTopicInfo, PendingPublish,
    PublishCallback, ShardHandle, ShardHook, StartedPublish,
};
pub use sink::{Accept, Delivery, Encoded, EncodingSlot, Offer, Sink};
pub use stats::{ShardStats, StatsSnapshot};
pub use tasks::{TaskClass, TaskCounts, TaskKind, TaskStats, Tasks};
