//! The shard log's decisions, as a sans-IO state machine: what to write where, when a batch
//! is durable, how a crash is read back. No I/O happens here: the owner of a [`Log`] performs
//! the [`Op`]s it hands out and reports each completion. The record format and the recovery
//! scan are in [`record`]. The device that performs the ops is `log/dma.rs` (`Segments`),
//! generic over a small file-system trait (`log/fs.rs`): glommio DMA files in the broker,
//! driven by `shard/store.rs`; an in-memory file system that crashes in the simulation
//! (`log/memfs.rs`, `log/sim.rs`), so the simulation runs the broker's own device and recovery
//! code, not a stand-in.
//!
//! - **Append and group commit.** Records accumulate in a batch; the batch is sealed with a
//!   commit record, written in one block-aligned write (the segment's last partial block is
//!   written again with the new bytes after it), and synced once. Every record of the batch is
//!   durable when that sync completes, and not before: a publish is acknowledged then.
//! - **Segments.** A batch never spans segments: one that would pass `segment_bytes` opens the
//!   next segment first (a batch larger than a segment makes that segment larger).
//! - **Failure.** A failed write or sync fails every record not yet durable, and the log: it
//!   takes no more appends (after a failed fsync the kernel's view of the file cannot be
//!   trusted), and the shard answers `StorageUnavailable` for its topics.
//! - **Recovery.** Segments are scanned in order: valid records come back; invalid bytes
//!   followed by a valid record are damage to synced data, reported (never skipped silently);
//!   invalid bytes at the end of the last segment are a torn tail, cut (appends continue where
//!   the valid data ends, once what was cut is overwritten with zeros and synced). Whole
//!   records after the last commit record are adopted: recovery writes their commit record. A
//!   torn tail holds only records that were never acknowledged: every acknowledged batch ends
//!   with a commit record that was synced with it. Damage in the last segment closes it:
//!   appends go to a new one. What recovery reads may not be durable yet (a write that failed,
//!   or a process crash before a sync, leaves bytes that read back from a cache), so its first
//!   op always syncs the last segment (after its own write, if it has one), before any append;
//!   earlier segments were synced before the log moved past them. [`Progress::Recovered`]
//!   says every record read back is durable.
//! - **Retention.** Whole segments are deleted ([`Log::delete_through`]) once nothing in them is
//!   retained; the caller decides which (messages, bytes, age per topic).
//!
//! The simulation (`log/sim.rs`) checks these promises against crashes at any point: see its
//! header for what it models and what it does not.

pub mod dma;
pub mod fs;
#[cfg(test)]
mod memfs;
#[cfg(test)]
mod model;
pub mod record;
#[cfg(test)]
mod sim;

use std::collections::VecDeque;

pub use record::{decode_at, scan, Damage, FormatError, Kind, Record, RecordRef, Scan};

/// A log's shape.
#[derive(Clone, Copy, Debug)]
pub struct LogConfig {
    /// A segment is closed once a batch would take it past this size.
    pub segment_bytes: u64,
    /// The device's block size: writes start and end on multiples of it (O_DIRECT).
    pub block_bytes: usize,
}

/// An I/O the log needs done next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create (or truncate) a segment.
    Create {
        /// The segment's id (its file name).
        segment: u64,
    },
    /// Write bytes into a segment.
    Write {
        /// The segment's id.
        segment: u64,
        /// Where (a multiple of the block size).
        offset: u64,
        /// What (a multiple of the block size long).
        data: Vec<u8>,
    },
    /// Make every write to a segment durable (fdatasync).
    Sync {
        /// The segment's id.
        segment: u64,
    },
}

/// What a completion changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing a caller waits for.
    None,
    /// Every record up to this ticket (inclusive) is durable.
    Durable(u64),
    /// Recovery's own I/O (the first op of a recovered log: a write and a sync, or a sync) is
    /// durable: every record it read back is durable now, the ones it adopted (see
    /// [`Recovered::uncommitted`]) committed, and appends follow.
    Recovered,
    /// The log failed: records after this ticket never will be durable.
    Failed(u64),
}

/// Why an append is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// An earlier write or sync failed.
    #[error("the log failed after an I/O error; it takes no more writes")]
    Failed,
    /// The record does not fit the format.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// The batch being written: its remaining I/O, in order, one at a time.
struct InFlight {
    /// The last ticket in it.
    upto: u64,
    /// Its segment, and where its first record starts there.
    segment: u64,
    base: u64,
    /// The last segment's valid length, and its last partial block, once it is durable.
    end: u64,
    tail: Vec<u8>,
    ops: VecDeque<Op>,
    /// An op was handed out and has not completed.
    busy: bool,
}

/// The log's state (see the module docs).
pub struct Log {
    cfg: LogConfig,
    /// Segments, oldest first; the last one takes appends.
    segments: VecDeque<u64>,
    /// Valid bytes in the last segment (0: not created yet).
    end: u64,
    /// The last segment's bytes from its last block boundary to `end`, written again in
    /// front of the next batch.
    tail: Vec<u8>,
    /// Encoded records waiting for the next batch, and how many.
    staged: Vec<u8>,
    staged_records: u64,
    next_ticket: u64,
    durable: u64,
    in_flight: Option<InFlight>,
    failed: bool,
    /// Open a new segment for the next batch that can (see `recover`).
    roll_next: bool,
    /// The last batch made durable: its segment, and where its first record starts.
    last_batch: (u64, u64),
}

impl Log {
    /// An empty log whose first segment is `first` (created by the first batch).
    pub fn new(cfg: LogConfig, first: u64) -> Self {
        Self::resume(cfg, VecDeque::from([first]), 0, Vec::new())
    }

    fn resume(cfg: LogConfig, segments: VecDeque<u64>, end: u64, tail: Vec<u8>) -> Self {
        Log {
            cfg,
            segments,
            end,
            tail,
            staged: Vec::new(),
            staged_records: 0,
            next_ticket: 1,
            durable: 0,
            in_flight: None,
            failed: false,
            roll_next: false,
            last_batch: (0, 0),
        }
    }

    /// Reads back a log from its segments' bytes (oldest first): the valid records, the
    /// damage (per segment), and the log, ready to append after the last valid record. Holds
    /// every segment at once: [`Recovery`] reads one at a time.
    pub fn recover(cfg: LogConfig, segments: Vec<(u64, Vec<u8>)>) -> (Log, Recovered) {
        let mut records = Vec::new();
        let mut r = Recovery::new(cfg);
        let n = segments.len();
        for (i, (id, bytes)) in segments.into_iter().enumerate() {
            r.segment(id, &bytes, i + 1 == n, |seg, at, rec| {
                records.push((seg, at, rec))
            });
        }
        let (log, mut rec) = r.finish();
        rec.records = records;
        (log, rec)
    }

    /// Adds a record to the next batch; its ticket (durable once [`Progress::Durable`]
    /// reaches it).
    pub fn append(&mut self, r: RecordRef<'_>) -> Result<u64, AppendError> {
        if self.failed {
            return Err(AppendError::Failed);
        }
        r.encode(&mut self.staged)?;
        self.staged_records += 1;
        let t = self.next_ticket;
        self.next_ticket += 1;
        Ok(t)
    }

    /// Where the batch [`Progress::Durable`] reported last lies: its segment, and the offset
    /// of its first record. A record's place is that offset plus [`Log::staged_bytes`] as it
    /// was just before the record was appended.
    pub fn durable_batch(&self) -> (u64, u64) {
        self.last_batch
    }

    /// Records appended and not yet durable.
    pub fn pending(&self) -> u64 {
        self.next_ticket - 1 - self.durable
    }

    /// Bytes staged for the next batch (the caller bounds it: see `StorageConfig`).
    pub fn staged_bytes(&self) -> usize {
        self.staged.len()
    }

    /// Whether an earlier I/O failed (no more appends).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The segment taking appends, and its valid bytes so far (durable ones).
    pub fn head(&self) -> (u64, u64) {
        (self.segments.back().copied().unwrap_or(0), self.end)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments.iter().copied()
    }

    /// The next I/O to perform, if one is due: one at a time, each reported with
    /// [`Log::complete`] before the next is handed out.
    pub fn next_op(&mut self) -> Option<Op> {
        if self.failed {
            return None;
        }
        if self.in_flight.is_none() {
            self.seal();
        }
        let f = self.in_flight.as_mut()?;
        if f.busy {
            return None;
        }
        let op = f.ops.front().cloned()?;
        f.busy = true;
        Some(op)
    }

    /// Reports the outcome of the op [`Log::next_op`] handed out last.
    pub fn complete(&mut self, ok: bool) -> Progress {
        let Some(f) = self.in_flight.as_mut().filter(|f| f.busy) else {
            return Progress::None;
        };
        if !ok {
            self.failed = true;
            self.in_flight = None;
            self.staged.clear();
            self.staged_records = 0;
            return Progress::Failed(self.durable);
        }
        f.busy = false;
        f.ops.pop_front();
        if !f.ops.is_empty() {
            return Progress::None;
        }
        let Some(f) = self.in_flight.take() else {
            return Progress::None;
        };
        self.end = f.end;
        self.tail = f.tail;
        if f.upto == 0 {
            return Progress::Recovered;
        }
        self.durable = f.upto;
        self.last_batch = (f.segment, f.base);
        Progress::Durable(f.upto)
    }

    /// Forgets every segment up to `segment` (retention: nothing in them is kept), and names
    /// them for the caller to delete; the last segment is never among them.
    pub fn delete_through(&mut self, segment: u64) -> Vec<u64> {
        let last = self.segments.back().copied();
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .copied()
            .filter(|&s| s <= segment && Some(s) != last)
            .collect();
        for &s in &doomed {
            self.segments.retain(|&x| x != s);
        }
        doomed
    }

    /// Seals the staged records into a batch: a commit record, then [create,] write, sync.
    fn seal(&mut self) {
        if self.staged_records == 0 {
            return;
        }
        let upto = self.next_ticket - 1;
        let Some(mut segment) = self.segments.back().copied() else {
            return;
        };
        let mut ops = VecDeque::new();
        let batch_bytes = self.staged.len() as u64 + 64;
        if self.end > 0 && (self.roll_next || self.end + batch_bytes > self.cfg.segment_bytes) {
            self.roll_next = false;
            segment += 1;
            self.segments.push_back(segment);
            self.end = 0;
            self.tail.clear();
        }
        if self.end == 0 {
            ops.push_back(Op::Create { segment });
        }
        let commit = Record::commit(self.staged_records, self.end, &self.staged);
        if commit.encode(&mut self.staged).is_err() {
            return; // a commit record's fields are fixed and small: it always encodes
        }
        let block = self.cfg.block_bytes;
        let offset = self.end - self.tail.len() as u64;
        let mut data = std::mem::take(&mut self.tail);
        data.extend_from_slice(&self.staged);
        let end = offset + data.len() as u64;
        let from = (end as usize / block * block).saturating_sub(offset as usize);
        let tail = data[from..].to_vec();
        data.resize(data.len().next_multiple_of(block), 0);
        self.staged.clear();
        self.staged_records = 0;
        ops.push_back(Op::Write {
            segment,
            offset,
            data,
        });
        ops.push_back(Op::Sync { segment });
        self.in_flight = Some(InFlight {
            upto,
            segment,
            base: self.end,
            end,
            tail,
            ops,
            busy: false,
        });
    }
}

/// Recovery one segment at a time (oldest first), so a shard with gigabytes of log holds one
/// segment in memory while it reads them back. [`Log::recover`] is the all-at-once form.
pub struct Recovery {
    cfg: LogConfig,
    ids: VecDeque<u64>,
    rec: Recovered,
    adopt: Option<Record>,
    /// The open (last) segment's valid end, its last partial block, and the bytes it held
    /// past its end (what the torn tail's wipe must cover).
    end: u64,
    tail: Vec<u8>,
    last: Option<u64>,
}

impl Recovery {
    /// Recovery of an empty log so far.
    pub fn new(cfg: LogConfig) -> Self {
        Recovery {
            cfg,
            ids: VecDeque::new(),
            rec: Recovered::default(),
            adopt: None,
            end: 0,
            tail: Vec::new(),
            last: None,
        }
    }

    /// Reads segment `id` (`open`: the last one, taking appends), calling `visit` with each
    /// valid message record: its segment, its offset, the record. Zeros after the valid data
    /// (blocks written whole, or wiped) are not a torn tail: nothing needs cutting there.
    pub fn segment(
        &mut self,
        id: u64,
        bytes: &[u8],
        open: bool,
        mut visit: impl FnMut(u64, u64, Record),
    ) {
        let s = scan(bytes, !open);
        if open && s.uncommitted > 0 {
            // Records after the open segment's last commit record: a batch whose commit
            // never reached the disk (never acknowledged), or whose commit record was
            // damaged since. They are whole, so they are adopted: recovery writes a commit
            // record for them, and a record that comes back is always in a committed batch.
            self.rec.uncommitted = s.uncommitted;
            let first = s.records[s.records.len() - s.uncommitted].0;
            self.adopt = Some(Record::commit(
                s.uncommitted as u64,
                first as u64,
                &bytes[first..s.end],
            ));
        }
        self.rec
            .damage
            .extend(s.damage.into_iter().map(|d| (id, d)));
        for (at, r) in s.records {
            if r.kind == Kind::Message {
                visit(id, at as u64, r);
            }
        }
        if open {
            let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            self.rec.cut = used.saturating_sub(s.end);
            self.end = s.end as u64;
            let from = s.end / self.cfg.block_bytes * self.cfg.block_bytes;
            self.tail = bytes[from..s.end].to_vec();
        }
        self.ids.push_back(id);
        self.last = Some(id);
    }

    /// The log, ready to append after the last valid record (its first ops are recovery's own
    /// write, when one is needed), and what was found.
    pub fn finish(self) -> (Log, Recovered) {
        let Recovery {
            cfg,
            mut ids,
            mut rec,
            adopt,
            end,
            tail,
            last,
        } = self;
        if ids.is_empty() {
            ids.push_back(0);
        }
        let mut log = Log::resume(cfg, ids, end, tail);
        let mut extra = Vec::new();
        if let Some(c) = adopt {
            // A commit record's fields are fixed and small: it always encodes.
            let _ = c.encode(&mut extra);
        }
        if rec.cut > 0 || !extra.is_empty() {
            // Before anything else, and synced: the adopted records' commit record, and zeros
            // over the cut tail (stale records beyond the new end must never be read back,
            // even after the next crash).
            let segment = log.segments.back().copied().unwrap_or(0);
            let offset = end - log.tail.len() as u64;
            let mut data = log.tail.clone();
            data.extend_from_slice(&extra);
            let new_end = offset + data.len() as u64;
            let from = (new_end as usize / cfg.block_bytes * cfg.block_bytes) - offset as usize;
            let new_tail = data[from..].to_vec();
            let cover = (end + rec.cut as u64 - offset) as usize;
            data.resize(data.len().max(cover).next_multiple_of(cfg.block_bytes), 0);
            log.in_flight = Some(InFlight {
                upto: 0,
                segment,
                base: end,
                end: new_end,
                tail: new_tail,
                ops: VecDeque::from([
                    Op::Write {
                        segment,
                        offset,
                        data,
                    },
                    Op::Sync { segment },
                ]),
                busy: false,
            });
        } else if let Some(segment) = last {
            // Nothing to write, but what was read back may not be durable yet (a write that
            // failed, or a process crash before a sync, left it in a cache): it is synced
            // before the log takes appends, or a later power loss could take records that came
            // back, and were served, from under the ones acknowledged after them.
            log.in_flight = Some(InFlight {
                upto: 0,
                segment,
                base: end,
                end,
                tail: log.tail.clone(),
                ops: VecDeque::from([Op::Sync { segment }]),
                busy: false,
            });
        }
        // Damage in the open segment (a flipped bit, or a batch torn so that its commit reached
        // the disk and an earlier block did not): appends go to a new segment, so this one is
        // read as closed from then on, where nothing valid after bad bytes is ever cut as a tail.
        log.roll_next = rec.damage.iter().any(|(s, _)| Some(*s) == last);
        rec.records.clear();
        (log, rec)
    }
}

/// What recovery read back.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every valid message record: its segment, its offset, the record.
    pub records: Vec<(u64, u64, Record)>,
    /// Damage inside written data, by segment (never skipped silently).
    pub damage: Vec<(u64, Damage)>,
    /// Bytes cut from the end of the last segment (a torn tail).
    pub cut: usize,
    /// Records after the open segment's last commit record (written, not known to be
    /// acknowledged): the last ones in `records`, adopted. They are durable once the log
    /// reports [`Progress::Recovered`]; until then they may still be lost.
    pub uncommitted: usize,
}
