//! Engine settings. Every limit has a default suited to one machine serving the public.

use std::path::PathBuf;
use std::time::Duration;

/// Most shards one node runs.
pub const SHARDS_MAX: usize = 1024;

/// Engine configuration; build a broker with [`crate::Broker::builder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Shards (executors); 0 means one per CPU in `cpus` when given, else one per available
    /// core.
    pub shards: usize,
    /// Pin each shard to its own CPU.
    pub pin: bool,
    /// CPUs to pin to, in shard order (default: the online CPUs in order). With `shards` at 0,
    /// one shard runs per CPU listed; with `shards` set, the first `shards` CPUs are used (a
    /// start-up error names the shortfall when fewer are listed).
    pub cpus: Option<Vec<usize>>,
    /// How long a topic's owner remembers an idempotency key: a publish repeating the key
    /// (same publisher, same topic) within it is answered with the original `(epoch, seq)`.
    pub idempotency_window: Duration,
    /// Idempotency keys remembered per topic; past it the oldest is forgotten early (counted
    /// in `idempotency_keys_evicted`).
    pub idempotency_keys_max: usize,
    /// Messages of history kept per topic.
    pub history_messages_max: usize,
    /// Payload bytes of history kept per topic.
    pub history_bytes_max: usize,
    /// Age after which history messages are dropped; a topic with no subscribers and no
    /// history left is dropped too (its next message starts a new epoch).
    pub history_age_max: Duration,
    /// Topics one shard may own; past it, publish and subscribe fail with `TopicLimit`.
    pub topics_per_shard_max: usize,
    /// Subscriptions one shard may hold; past it, subscribe fails.
    pub subscriptions_per_shard_max: usize,
    /// Largest payload of one message, in bytes.
    pub message_bytes_max: usize,
    /// Largest namespace or topic name, in bytes (at most 64).
    pub name_bytes_max: usize,
    /// Bytes a library subscriber's queue may hold before it lags.
    pub subscriber_queue_bytes_max: usize,
    /// How long a subscriber may stay lagging (queue full) before it is closed as too slow.
    pub subscriber_lag_max: Duration,
    /// Heartbeat interval on quiet subscriptions.
    pub heartbeat_interval: Duration,
    /// How long shutdown waits for local subscribers (network connections) to drain.
    pub drain_timeout: Duration,
    /// Commands queued to one shard from library callers before `publish` waits.
    pub shard_inbox_max: usize,
    /// Batches in flight on each shard-to-shard channel.
    pub mesh_channel_batches: usize,
    /// Messages waiting in one shard-to-shard outbox before live items are dropped (the
    /// receiving shard repairs the gap from history, or reports a discontinuity).
    pub mesh_outbox_messages_max: usize,
    /// Spin this long before an idle executor parks (cuts cross-shard wake-up latency at
    /// the price of CPU); `None` parks at once.
    pub spin_before_park: Option<Duration>,
    /// io_uring registered buffer memory per shard, in bytes (64 KiB: glommio's least; nothing
    /// here reads into registered buffers yet, and the pool's pages, once touched, stay).
    pub io_memory_bytes: usize,
    /// First epoch value (default: the wall clock in microseconds); epochs only grow.
    pub epoch_base: Option<u64>,
    /// Presence members listed per topic, cluster-wide; past it, a subscription asking to
    /// enter is subscribed but not listed, and told so (`Refused`, counted in
    /// `presence_refused`).
    pub presence_members_max: usize,
    /// Largest presence info blob, in bytes (at most 4096); a larger one is refused.
    pub presence_info_bytes_max: usize,
    /// Join and leave events per topic per second; past it they are counted, not sent, and
    /// subscribers get one `Overflow` event with the count when the second ends.
    pub presence_events_per_second: u32,
    /// Occupancy events per topic go out at most once per interval (the latest count).
    pub occupancy_interval: Duration,
    /// Most members one presence query returns.
    pub presence_page_max: usize,
    /// Durable history: each shard keeps its owned topics' messages in a log on disk (None,
    /// the default: history lives in memory only). See docs/storage.md.
    pub storage: Option<StorageConfig>,
}

/// When a durable publish is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After the fdatasync that covers it (group commit: one sync per batch per shard).
    #[default]
    Always,
    /// After the write: a crash of the process keeps it, a power loss may not. The
    /// acknowledgement says `written`, not `synced`.
    Never,
}

/// Where and how a shard keeps its log (`--data-dir`, `[storage]`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StorageConfig {
    /// The data directory: one sub-directory per shard (`shard-N/`), on a real filesystem
    /// (O_DIRECT does not work on tmpfs).
    pub data_dir: PathBuf,
    /// When publishes are acknowledged.
    pub fsync: Fsync,
    /// A segment file is closed once a batch would take it past this size.
    pub segment_bytes: u64,
    /// Log bytes each shard keeps; past it the oldest whole segments are deleted.
    pub retention_bytes: u64,
    /// Messages older than this are not kept: a topic forgets them, and segments whose
    /// newest message is older are deleted.
    pub retention_age: Duration,
    /// Messages each topic keeps on disk at most (its oldest beyond go); a segment is deleted
    /// once no topic keeps anything in it.
    pub topic_retention_messages: u64,
    /// Record bytes each topic keeps on disk at most.
    pub topic_retention_bytes: u64,
    /// Bytes of publishes waiting for the next write on one shard (while the previous batch
    /// is being written and synced); past it, publishes to that shard's topics are refused
    /// with `Overloaded` until the disk catches up.
    pub backlog_bytes_max: usize,
    /// Set at start-up, not by users: with `fsync = "never"`, the machine restarted while
    /// the last broker on this dir ran (a power loss or a kernel crash), so acknowledged
    /// messages it had not synced may be gone and every topic starts a new epoch (see
    /// `shard::lock_data_dir`).
    pub(crate) unsynced_loss: bool,
}

impl StorageConfig {
    /// Defaults with the data directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: dir.into(),
            fsync: Fsync::Always,
            segment_bytes: 64 << 20,
            retention_bytes: 1 << 30,
            retention_age: Duration::from_secs(7 * 24 * 3600),
            topic_retention_messages: 10_000_000,
            topic_retention_bytes: 256 << 20,
            backlog_bytes_max: 16 << 20,
            unsynced_loss: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            shards: 0,
            pin: false,
            cpus: None,
            idempotency_window: Duration::from_secs(120),
            idempotency_keys_max: 10_000,
            history_messages_max: 1000,
            history_bytes_max: 1 << 20,
            history_age_max: Duration::from_secs(3600),
            topics_per_shard_max: 100_000,
            subscriptions_per_shard_max: 1_000_000,
            message_bytes_max: 1 << 20,
            name_bytes_max: fanfare_proto::NAME_BYTES_MAX,
            subscriber_queue_bytes_max: 1 << 20,
            subscriber_lag_max: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            shard_inbox_max: 4096,
            mesh_channel_batches: 256,
            mesh_outbox_messages_max: 65_536,
            spin_before_park: None,
            io_memory_bytes: 64 << 10,
            epoch_base: None,
            presence_members_max: 10_000,
            presence_info_bytes_max: 1024,
            presence_events_per_second: 100,
            occupancy_interval: Duration::from_secs(1),
            presence_page_max: fanfare_proto::message::PRESENCE_PAGE_MAX,
            storage: None,
        }
    }
}

impl Config {
    /// Checks ranges; called by `start`.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 14] = [
            (
                self.idempotency_keys_max >= 1,
                "idempotency_keys_max must be at least 1",
            ),
            (self.shards <= SHARDS_MAX, "shards must be at most 1024"),
            (
                self.history_messages_max >= 1,
                "history_messages_max must be at least 1",
            ),
            (
                self.topics_per_shard_max >= 1,
                "topics_per_shard_max must be at least 1",
            ),
            (
                self.subscriptions_per_shard_max >= 1,
                "subscriptions_per_shard_max must be at least 1",
            ),
            (
                self.message_bytes_max >= 1,
                "message_bytes_max must be at least 1",
            ),
            (
                (1..=fanfare_proto::NAME_BYTES_MAX).contains(&self.name_bytes_max),
                "name_bytes_max must be 1..=64",
            ),
            (
                self.subscriber_queue_bytes_max >= 1024,
                "subscriber_queue_bytes_max must be at least 1024",
            ),
            (
                !self.heartbeat_interval.is_zero(),
                "heartbeat_interval must be positive",
            ),
            (
                self.shard_inbox_max >= 1 && self.mesh_channel_batches >= 1,
                "channel sizes must be at least 1",
            ),
            (
                self.mesh_outbox_messages_max >= 1,
                "mesh_outbox_messages_max must be at least 1",
            ),
            (
                self.presence_info_bytes_max <= fanfare_proto::message::PRESENCE_INFO_BYTES_MAX,
                "presence_info_bytes_max must be at most 4096",
            ),
            (
                (1..=fanfare_proto::message::PRESENCE_PAGE_MAX).contains(&self.presence_page_max),
                "presence_page_max must be 1..=1000",
            ),
            (
                self.presence_events_per_second >= 1 && !self.occupancy_interval.is_zero(),
                "presence_events_per_second and occupancy_interval must be positive",
            ),
        ];
        if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
            return Err((*why).to_owned());
        }
        if let Some(s) = &self.storage {
            if !(1 << 20..=2 << 30).contains(&s.segment_bytes) {
                return Err("storage segment_bytes must be 1 MiB..=2 GiB".to_owned());
            }
            if s.backlog_bytes_max > 1 << 30 {
                return Err("storage backlog_bytes_max must be at most 1 GiB".to_owned());
            }
            if s.retention_bytes < s.segment_bytes {
                return Err("storage retention_bytes must be at least segment_bytes".to_owned());
            }
            if s.backlog_bytes_max < self.message_bytes_max + 4096 {
                return Err(
                    "storage backlog_bytes_max must hold at least one message of message_bytes_max"
                        .to_owned(),
                );
            }
            if s.data_dir.as_os_str().is_empty() {
                return Err("storage data_dir must not be empty".to_owned());
            }
        }
        Ok(())
    }

    /// The number of shards to run: `shards`; when 0, one per CPU in `cpus` if given, else
    /// one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            if let Some(cpus) = self.cpus.as_ref().filter(|c| !c.is_empty()) {
                return cpus.len().min(SHARDS_MAX);
            }
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(SHARDS_MAX)
        } else {
            self.shards
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_without_shards_run_one_shard_per_cpu() {
        let c = Config {
            cpus: Some(vec![1]),
            ..Config::default()
        };
        assert_eq!(c.shard_count(), 1);
        let c = Config {
            shards: 3,
            cpus: Some(vec![0]),
            ..Config::default()
        };
        assert_eq!(
            c.shard_count(),
            3,
            "an explicit count wins (and pinning says it is short)"
        );
        let c = Config {
            cpus: Some(vec![]),
            ..Config::default()
        };
        assert!(c.shard_count() >= 1);
    }
}
