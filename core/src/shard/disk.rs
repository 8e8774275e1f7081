//! The shard's durable side as data: its [`Store`] (the log and the publishes waiting on it)
//! and the types its callers share. The behaviour is in `store.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use fanfare_proto::Durability;

use crate::cluster::Replay;
use crate::config::StorageConfig;
use crate::ids::{Epoch, Seq, ShardId, SubId, TopicKey};
use crate::log::Log;
use crate::message::{Message, PublishError, Published, SubscribeError};
use crate::shard::position::{Gap, OwnerReply};

/// Called with the answer to a fetch, on the asking shard (must not call into the shard).
pub type FetchCallback = Box<dyn FnOnce(Result<Replay, SubscribeError>)>;

/// Messages one catch-up read from disk returns at most (the subscriber asks again for more).
pub(crate) const DISK_PAGE_MESSAGES: usize = 1000;
/// Bytes one catch-up read spans at most (at least one record).
pub(crate) const DISK_PAGE_BYTES: u64 = 4 << 20;
/// Catch-up reads queued on one shard; past it, a request is answered from memory with a
/// discontinuity over the part only the disk holds (counted in `storage_reads_shed`).
pub(crate) const DISK_READS_MAX: usize = 4096;

/// Called on the publisher's shard with the answer to a publish answered later (see
/// [`crate::ShardHandle::when_answered`]). It runs after the engine's step that answered it,
/// with the shard's state no longer borrowed: it may call into the shard.
pub type PublishCallback = Box<dyn FnOnce(Result<Published, PublishError>)>;

/// Where the publisher's answer goes. Only `State::answer` (owner.rs) delivers one, so every
/// kind, the mesh's included, is always delivered.
pub(crate) enum Answer {
    /// Over a channel (another thread or task waits on it).
    Channel(flume::Sender<Result<Published, PublishError>>),
    /// Straight into the caller (a connection on this shard): no task, no channel.
    Call(PublishCallback),
    /// To the shard that forwarded the publish, through the mesh (`State::answer`).
    Shard { to: ShardId, ticket: u64 },
}

/// A publish ordered and appended, waiting for its batch to be durable.
pub(crate) struct Waiting {
    pub ticket: u64,
    pub key: TopicKey,
    pub msg: Message,
    pub idempotency_key: Option<Arc<str>>,
    pub answer: Option<Answer>,
    /// Answers to repeats of this publish (same publisher and idempotency key) that arrived
    /// while it waited; empty, and allocation-free, otherwise. Bounded by the publishes a
    /// client may have in flight (`publishes_in_flight_max` per connection, or the library
    /// inbox): every repeat holds one of those slots until it is answered here.
    pub repeats: Vec<Answer>,
    /// Where its record starts in the staged batch, and its length on disk.
    pub at: u64,
    pub len: u32,
}

/// Where one record is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub segment: u64,
    pub offset: u32,
    /// Its length on disk; 0 marks a record that was written and is lost (damage found at
    /// start-up: a hole in the topic's sequence, see [`DiskIndex`]).
    pub len: u32,
    /// When it was published (seconds since the Unix epoch), for retention by age.
    pub at_s: u32,
}

impl Loc {
    /// A lost record, placed (for retention) where the record after it is.
    pub(crate) fn lost(near: Loc) -> Loc {
        Loc { len: 0, ..near }
    }

    /// Whether this marks a lost record.
    pub(crate) fn is_lost(&self) -> bool {
        self.len == 0
    }
}

/// The longest run of lost sequences a topic's index keeps as a hole (24 bytes each); a longer
/// one starts the index over after it (what came before is then out of reach, and a reader
/// starting there is told so, from the oldest sequence still indexed).
pub(crate) const HOLE_SEQS_MAX: u64 = 1 << 16;

/// Where a topic's records of its current epoch are on disk, by sequence (24 bytes per
/// retained record; empty, and allocation-free, without a data dir).
///
/// Records that were written and are lost (damage found at start-up) stay in the index as
/// holes ([`Loc::is_lost`]): every intact record around them stays readable in the same
/// epoch, and a reader that reaches a hole is told exactly which sequences it covers
/// ([`DiskIndex::hole_at`]).
#[derive(Default)]
pub(crate) struct DiskIndex {
    epoch: Epoch,
    /// The sequence of `locs[0]`.
    first: Seq,
    locs: VecDeque<Loc>,
    /// Record bytes indexed.
    bytes: u64,
}

impl DiskIndex {
    /// Records that `(epoch, seq)` is at `loc`. Sequences skipped since the last one pushed
    /// become a hole (lost records); a new epoch, a sequence that goes back, or a hole longer
    /// than [`HOLE_SEQS_MAX`] starts the index over.
    pub(crate) fn push(&mut self, epoch: Epoch, seq: Seq, loc: Loc) {
        let next = self.first.0 + self.locs.len() as u64;
        if epoch != self.epoch
            || self.locs.is_empty()
            || seq.0 < next
            || seq.0 - next > HOLE_SEQS_MAX
        {
            self.epoch = epoch;
            self.first = seq;
            self.locs.clear();
            self.bytes = 0;
        } else {
            for _ in next..seq.0 {
                self.locs.push_back(Loc::lost(loc));
            }
        }
        self.bytes += u64::from(loc.len);
        self.locs.push_back(loc);
        self.check();
    }

    /// Marks every sequence after the last one indexed up to `upto` (inclusive) lost: records
    /// of `epoch` known to be damaged after the last intact one. Nothing changes for another
    /// epoch, an empty index, or a run longer than [`HOLE_SEQS_MAX`]: false then.
    pub(crate) fn push_lost(&mut self, epoch: Epoch, upto: Seq) -> bool {
        let next = self.first.0 + self.locs.len() as u64;
        let Some(&last) = self.locs.back() else {
            return false;
        };
        if epoch != self.epoch || upto.0 < next || upto.0 - next >= HOLE_SEQS_MAX {
            return false;
        }
        for _ in next..=upto.0 {
            self.locs.push_back(Loc::lost(last));
        }
        self.check();
        true
    }

    /// If `seq` is lost: the first sequence after the hole it is in (possibly past the last
    /// one indexed). `None` when `seq` is not a lost record of the index.
    pub(crate) fn hole_at(&self, seq: Seq) -> Option<Seq> {
        let i = usize::try_from(seq.0.checked_sub(self.first.0)?).ok()?;
        if !self.locs.get(i)?.is_lost() {
            return None;
        }
        let run = self.locs.iter().skip(i).take_while(|l| l.is_lost()).count();
        Some(Seq(seq.0 + run as u64))
    }

    /// The last record indexed (a hole's place, if the index ends with one).
    pub(crate) fn last(&self) -> Option<Loc> {
        self.locs.back().copied()
    }

    /// Per-topic retention: forgets the oldest records while more than `messages` or `bytes`
    /// are indexed, or while the oldest was published before `cutoff_s`.
    pub(crate) fn trim(&mut self, messages: u64, bytes: u64, cutoff_s: u32) {
        while let Some(l) = self.locs.front() {
            if self.locs.len() as u64 <= messages && self.bytes <= bytes && l.at_s >= cutoff_s {
                break;
            }
            self.pop_front();
        }
        self.shrink();
        self.check_all();
    }

    fn pop_front(&mut self) {
        if let Some(l) = self.locs.pop_front() {
            self.bytes -= u64::from(l.len);
            self.first = Seq(self.first.0 + 1);
        }
    }

    fn shrink(&mut self) {
        // A hole left at the front covers nothing a reader could still get: it goes too (a
        // reader starting there is told from the oldest sequence still indexed, exactly).
        while self.locs.front().is_some_and(Loc::is_lost) {
            self.pop_front();
        }
        if self.locs.is_empty() && self.locs.capacity() > 0 {
            self.locs = VecDeque::new();
        }
    }

    /// The invariant every change keeps, in debug and test builds: the index never starts
    /// with a hole (it starts with a record that came back, and retention drops a hole left
    /// at the front).
    fn check(&self) {
        debug_assert!(self.locs.front().is_none_or(|l| !l.is_lost()));
    }

    /// [`DiskIndex::check`], and that `bytes` is the sum of the indexed records' lengths (a
    /// walk of the index: after retention, once a second at most).
    fn check_all(&self) {
        self.check();
        debug_assert_eq!(
            self.bytes,
            self.locs.iter().map(|l| u64::from(l.len)).sum::<u64>()
        );
    }

    /// The oldest segment a retained record is in.
    pub(crate) fn oldest_segment(&self) -> Option<u64> {
        self.locs.front().map(|l| l.segment)
    }

    /// The oldest sequence on disk in `epoch`.
    pub(crate) fn first_seq(&self, epoch: Epoch) -> Option<Seq> {
        (self.epoch == epoch && !self.locs.is_empty()).then_some(self.first)
    }

    /// Places of the records from `from` on, up to `upto` (exclusive), within one page; the
    /// page ends before a hole.
    pub(crate) fn page(&self, from: Seq, upto: Seq) -> Vec<Loc> {
        let skip = from.0.saturating_sub(self.first.0) as usize;
        let want = upto.0.saturating_sub(from.0) as usize;
        let mut out: Vec<Loc> = Vec::new();
        let mut span = 0u64;
        for loc in self
            .locs
            .iter()
            .skip(skip)
            .take(want.min(DISK_PAGE_MESSAGES))
            .take_while(|l| !l.is_lost())
        {
            span += u64::from(loc.len);
            if !out.is_empty() && span > DISK_PAGE_BYTES {
                break;
            }
            out.push(*loc);
        }
        out
    }

    /// Forgets records in segments up to `segment` (deleted by retention).
    pub(crate) fn forget_through(&mut self, segment: u64) {
        while self.locs.front().is_some_and(|l| l.segment <= segment) {
            self.pop_front();
        }
        self.shrink();
        self.check_all();
    }

    /// How many sequences are indexed (holes included).
    pub(crate) fn len(&self) -> usize {
        self.locs.len()
    }

    /// Whether nothing is indexed.
    pub(crate) fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }
}

/// Where the owner's answer to a subscribe or fetch goes once it is ready (at once, or after
/// a read from disk).
pub(crate) enum ReplyTo {
    /// A subscriber on this shard.
    Sub(SubId),
    /// A subscriber on another shard of this node.
    Shard { to: ShardId, sub: SubId },
    /// A fetch from another shard.
    Fetch { to: ShardId, token: u64 },
    /// A fetch on this shard.
    Callback(FetchCallback),
}

/// The owner's answer to a subscribe or fetch, before it is sent.
pub(crate) enum Fetched {
    /// From memory.
    Ready(OwnerReply),
    /// The start is only on disk: read this page first.
    Disk {
        epoch: Epoch,
        from: Seq,
        locs: Vec<Loc>,
        disc: Option<Gap>,
    },
}

/// A publish's idempotency scope: its topic, its publisher, its key.
pub(crate) type KeyedPublish = (TopicKey, Option<Arc<str>>, Arc<str>);

/// A catch-up read from disk waiting for `read_loop`.
pub(crate) struct DiskRead {
    pub to: ReplyTo,
    pub key: TopicKey,
    pub epoch: Epoch,
    /// The first sequence wanted, where it is on disk, and the discontinuity before it.
    pub from: Seq,
    pub locs: Vec<Loc>,
    pub disc: Option<Gap>,
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
    /// The shard is done (its mesh closed): `store_loop` ends once nothing waits.
    pub stopping: bool,
    /// The waiting publishes that carry an idempotency key, by (topic, publisher, key): a
    /// repeat while the first waits for the disk is answered with it.
    pub keyed: ahash::AHashMap<KeyedPublish, u64>,
    /// Catch-up reads waiting for `read_loop`, and its waker.
    pub reads: VecDeque<DiskRead>,
    pub read_waker: Option<Waker>,
}

/// How a publish was ordered.
pub(crate) enum Ordered {
    /// Answered now (no data dir).
    Done(Published),
    /// Appended to the log (this ticket), or a repeat of a publish waiting there with the
    /// same idempotency key: answered when durable, through [`State::answer_when_stored`].
    Stored(u64),
}

impl Store {
    /// Wakes `store_loop` (new work, or the shard is stopping).
    pub(crate) fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Queues a catch-up read; gives it back when [`DISK_READS_MAX`] are queued.
    pub(crate) fn read(&mut self, r: DiskRead) -> Result<(), DiskRead> {
        if self.reads.len() >= DISK_READS_MAX {
            return Err(r);
        }
        self.reads.push_back(r);
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Publishes waiting for the disk.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Epoch = Epoch(3);

    fn loc(offset: u32) -> Loc {
        Loc {
            segment: 0,
            offset,
            len: 64,
            at_s: 100,
        }
    }

    #[test]
    fn lost_records_are_holes_and_pages_end_before_them() {
        let mut d = DiskIndex::default();
        for s in 1..=3 {
            d.push(E, Seq(s), loc(s as u32 * 64));
        }
        // 4 and 5 never came back.
        d.push(E, Seq(6), loc(6 * 64));
        assert_eq!(d.first_seq(E), Some(Seq(1)));
        assert_eq!(d.hole_at(Seq(3)), None);
        assert_eq!(d.hole_at(Seq(4)), Some(Seq(6)));
        assert_eq!(d.hole_at(Seq(5)), Some(Seq(6)));
        assert_eq!(d.hole_at(Seq(6)), None);
        assert_eq!(d.hole_at(Seq(7)), None);
        assert_eq!(d.page(Seq(1), Seq(10)).len(), 3);
        assert_eq!(d.page(Seq(6), Seq(10)), vec![loc(6 * 64)]);
        // Damage named after the last intact record: a hole at the end.
        assert!(d.push_lost(E, Seq(8)));
        assert_eq!(d.hole_at(Seq(7)), Some(Seq(9)));
        assert!(!d.push_lost(Epoch(2), Seq(9)), "another epoch");
        // Retention: a hole left at the front goes with what was before it.
        d.trim(5, u64::MAX, 0);
        assert_eq!(d.first_seq(E), Some(Seq(6)));
        assert_eq!(d.hole_at(Seq(4)), None);
        d.forget_through(0);
        assert!(d.is_empty());
    }

    #[test]
    fn a_hole_too_long_or_a_sequence_going_back_starts_over() {
        let mut d = DiskIndex::default();
        d.push(E, Seq(1), loc(0));
        d.push(E, Seq(2 + HOLE_SEQS_MAX + 1), loc(64));
        assert_eq!(d.first_seq(E), Some(Seq(2 + HOLE_SEQS_MAX + 1)));
        d.push(E, Seq(1), loc(128));
        assert_eq!(d.first_seq(E), Some(Seq(1)));
        assert_eq!(d.page(Seq(1), Seq(5)), vec![loc(128)]);
    }
}
