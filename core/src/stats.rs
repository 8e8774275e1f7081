//! Per-shard counters. Each is written only by its own shard and read by anyone (metrics,
//! tests), so scraping never takes a lock or slows the data path.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    // Fields carry only doc comments (`#[doc = ".."]`), so each field's text can become its
    // metric's HELP line.
    ($(#[$m:meta])* $name:ident { $($(#[doc = $doc:literal])* $field:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct $name {
            $($(#[doc = $doc])* pub $field: AtomicU64,)*
        }

        impl $name {
            /// Each counter's name and its doc comment (one line per source line, as written),
            /// for metrics exporters' HELP text.
            pub const HELP: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), concat!($($doc, "\n",)*)),)*];

            /// A copy of every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }

        /// A point-in-time copy of [`ShardStats`] (sums across shards add field by field).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl std::ops::Add for StatsSnapshot {
            type Output = Self;
            fn add(self, o: Self) -> Self {
                Self { $($field: self.$field + o.$field,)* }
            }
        }

        impl StatsSnapshot {
            /// Each counter's name and value, for metrics exporters.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field),)*]
            }
        }
    };
}

counters! {
    /// Counters of one shard.
    ShardStats {
        /// Messages this shard ordered as a topic owner.
        publishes,
        /// Events (items, heartbeats, discontinuities) accepted by local subscribers' queues.
        deliveries,
        /// Items delivered from history (subscribe replay and catch-up).
        replayed,
        /// Topics this shard owns now (gauge).
        topics,
        /// Subscriptions on this shard now (gauge).
        subscriptions,
        /// Discontinuities told to subscribers.
        discontinuities,
        /// Times a subscriber's queue was full and it skipped ahead (slow subscriber).
        lagged,
        /// Catch-ups from history after a lagging subscriber drained.
        catchups,
        /// Subscribers closed for staying behind too long.
        closed_too_slow,
        /// Heartbeats sent.
        heartbeats,
        /// Live items dropped because a shard-to-shard outbox was full (repaired from history).
        mesh_items_dropped,
        /// Shard-to-shard batches sent.
        mesh_batches,
        /// Publishes or subscribes refused by the topic limit.
        topic_limit_rejections,
        /// Subscribes refused by the subscription limit.
        subscription_limit_rejections,
        /// Topics dropped as idle (or, in a cluster, no longer owned by this node).
        topics_expired,
        /// Local topics whose owner is another node: one upstream interest each (gauge).
        upstream_topics,
        /// Requests sent to storage nodes (subscribe positions and catch-ups).
        upstream_requests,
        /// Publishes forwarded to storage nodes.
        upstream_publishes,
        /// Publishes forwarded to another shard of this node (answered through the mesh).
        mesh_publishes,
        /// Forwarded publishes waiting for their owner shard's answer now (gauge; bounded by
        /// the publishes clients may have in flight: `publishes_in_flight_max` per
        /// connection).
        mesh_publishes_waiting,
        /// Local topics moved to another owner after a membership change.
        topics_rehomed,
        /// Subscriptions held by node links on this shard (one per router shard and topic).
        link_subscriptions,
        /// Publishes answered from the idempotency window (a repeated key: nothing ordered).
        idempotent_repeats,
        /// Idempotency keys forgotten early because a topic held `idempotency_keys_max`.
        idempotency_keys_evicted,
        /// Presence members listed on topics this shard owns (gauge).
        presence_members,
        /// Members that entered topics this shard owns.
        presence_joins,
        /// Members that left topics this shard owns (unsubscribed, disconnected, or their
        /// router's link closed).
        presence_leaves,
        /// Subscriptions not listed because their topic held `presence_members_max`.
        presence_refused,
        /// Presence events (join, leave, occupancy, overflow) sent by this shard as owner.
        presence_events,
        /// Join and leave events not sent for the rate limit (announced by `Overflow`).
        presence_events_skipped,
        /// Presence queries answered by this shard as owner.
        presence_queries,
        /// Messages this shard's log made durable (written, and synced with `fsync = always`).
        storage_records,
        /// Batches written to this shard's log (one write and, with `fsync = always`, one
        /// fdatasync each: group commit).
        storage_batches,
        /// Bytes written to this shard's log (block-aligned writes, commit records included).
        storage_bytes_written,
        /// Log bytes on disk now (gauge).
        storage_bytes,
        /// Segment files on disk now (gauge).
        storage_segments,
        /// Segments deleted by retention.
        storage_segments_deleted,
        /// Writes or syncs of this shard's log that failed; after one, the shard refuses
        /// publishes with `StorageUnavailable` until it restarts.
        storage_errors,
        /// Publishes refused because the log failed (`StorageUnavailable`).
        storage_refused,
        /// Publishes refused because the log's backlog was full (`Overloaded`).
        storage_backlog_refused,
        /// Messages read back from the log at start-up.
        storage_recovered,
        /// Damaged places found at start-up (a CRC failed inside synced data: one record, or
        /// a range no valid header names). Only the records they cover are lost.
        storage_damaged,
        /// Sequences lost to damage, found at start-up as holes in their topics (the topics
        /// keep their epochs; readers crossing a hole get one discontinuity naming it).
        storage_lost_messages,
        /// Topics given a new epoch at start-up because damage may have taken their newest
        /// messages (their sequence cannot continue).
        storage_renewed_topics,
        /// Bytes of a torn tail cut at start-up (a batch never acknowledged).
        storage_cut_bytes,
        /// Catch-up reads from the log (one page each).
        storage_reads,
        /// Messages read back from the log for catch-up.
        storage_read_messages,
        /// Catch-up reads that failed (a discontinuity told the subscriber).
        storage_read_errors,
        /// Catch-up reads answered from memory because `DISK_READS_MAX` were queued (with a
        /// discontinuity over what only the disk held).
        storage_reads_shed,
    }
}

impl ShardStats {
    pub(crate) fn inc(c: &AtomicU64) {
        // Single writer: a relaxed load and store avoids a locked instruction.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn dec(c: &AtomicU64) {
        c.store(
            c.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn set(c: &AtomicU64, v: u64) {
        c.store(v, Ordering::Relaxed);
    }
}
