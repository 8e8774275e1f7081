//! The owner's durable side (with a data dir): each shard appends its owned topics' messages
//! to its own log (`crate::log`), and a message reaches history, subscribers and its publisher
//! only once the log says it is durable. See docs/storage.md.
//!
//! - `owner_publish` orders a message (its sequence), appends its record and parks it in
//!   [`Store::waiting`]; `store_loop` performs the log's I/O (one write per batch, durable when
//!   it completes with `fsync = "always"`, whose segments are O_DSYNC: every publish that
//!   arrived while the previous batch was on its way shares the next one) and hands each
//!   completion to [`State::store_done`], which releases what became durable, in order:
//!   history, fan-out, acknowledgement.
//! - Delivering only what is durable is what lets a topic keep its epoch across a restart: no
//!   subscriber ever saw a message that a crash could take back and a later publish could
//!   reuse the sequence of.
//! - A failed write or sync fails every waiting publish (`StorageUnavailable`) and the log;
//!   the shard goes on serving subscriptions and other shards' topics, and refuses publishes
//!   to its own until it restarts (after a failed fsync the kernel's copy cannot be trusted).
//! - Start-up reads the log back ([`open`]): every topic returns with its epoch, sequence,
//!   history and recent idempotency keys. Damage costs only the records it covers: they are
//!   holes in their topics (same epoch; readers crossing one are told exactly what it holds),
//!   and a topic starts a new epoch only when damage may have taken its newest messages
//!   (`State::take_damage`; the data dir itself: `datadir.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ahash::AHashSet;
use bytes::Bytes;
use fanfare_proto::Durability;

use crate::config::{Fsync, StorageConfig};
use crate::ids::{Epoch, Seq, TopicKey};
use crate::log::dma::Segments;
use crate::log::{Damage, LogConfig, Op, Progress, Record, Recovery};
use crate::message::{Message, PublishError, Published};
use crate::shard::disk::{Answer, Loc, SegInfo, Store, Waiting};
use crate::shard::state::{wall_clock_micros, with_state, State};
use crate::stats::ShardStats;

/// Writes are aligned to this (a multiple of every O_DIRECT alignment seen: 512 or 4096).
const BLOCK_BYTES: usize = 4096;

impl State {
    /// Appends an ordered message to the log (see the module docs). `topic` is already
    /// known to exist.
    pub(crate) fn store_append(
        &mut self,
        key: TopicKey,
        msg: Message,
        idempotency_key: Option<Arc<str>>,
    ) -> Result<u64, PublishError> {
        let Some(store) = self.store.as_mut() else {
            return Err(PublishError::StorageUnavailable);
        };
        let publisher = msg.publisher_id.as_deref().unwrap_or("");
        let at = store.log.staged_bytes() as u64;
        let rec = crate::log::RecordRef {
            kind: crate::log::Kind::Message,
            topic: key.as_str().as_bytes(),
            epoch: msg.epoch.0,
            seq: msg.seq.0,
            timestamp_us: wall_clock_micros(),
            publisher: publisher.as_bytes(),
            key: idempotency_key.as_deref().unwrap_or("").as_bytes(),
            payload: &msg.payload,
        };
        let len = rec.encoded_len() as u32;
        let ticket = store
            .log
            .append(rec)
            .map_err(|_| PublishError::StorageUnavailable)?;
        if let Some(k) = &idempotency_key {
            store
                .keyed
                .insert((key.clone(), msg.publisher_id.clone(), k.clone()), ticket);
        }
        store.waiting.push_back(Waiting {
            ticket,
            key,
            msg,
            idempotency_key,
            answer: None,
            repeats: Vec::new(),
            at,
            len,
        });
        store.wake();
        Ok(ticket)
    }

    /// The ticket of a publish of `key` by `publisher` with idempotency key `k` still waiting
    /// for the disk.
    pub(crate) fn store_waiting_with(
        &self,
        key: &TopicKey,
        publisher: &Option<Arc<str>>,
        k: &Arc<str>,
    ) -> Option<u64> {
        let store = self.store.as_ref()?;
        if store.keyed.is_empty() {
            return None;
        }
        store
            .keyed
            .get(&(key.clone(), publisher.clone(), k.clone()))
            .copied()
    }

    /// Refuses a publish the log cannot take now: failed, or its backlog full.
    pub(crate) fn store_check(&self) -> Result<(), PublishError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if store.log.is_failed() {
            ShardStats::inc(&self.stats.storage_refused);
            return Err(PublishError::StorageUnavailable);
        }
        let bytes = store.log.staged_bytes();
        if bytes >= store.cfg.backlog_bytes_max {
            ShardStats::inc(&self.stats.storage_backlog_refused);
            return Err(PublishError::StorageBacklog {
                bytes,
                max: store.cfg.backlog_bytes_max,
            });
        }
        Ok(())
    }

    /// Sends the answer to the waiting publish `ticket` ([`Ordered::Stored`]) to `answer`
    /// once it is durable (or failed). The newest is at the back: usually found at once.
    pub(crate) fn answer_when_stored(&mut self, ticket: u64, answer: Answer) {
        let Some(store) = self.store.as_mut() else {
            self.answer(answer, Err(PublishError::StorageUnavailable));
            return;
        };
        match store.waiting.iter_mut().rev().find(|w| w.ticket == ticket) {
            Some(w) if w.answer.is_none() => w.answer = Some(answer),
            Some(w) => w.repeats.push(answer),
            // Not waiting any more: it failed with the log (a publish that became durable is
            // answered from the topic's window before it gets here).
            None => self.answer(answer, Err(PublishError::StorageUnavailable)),
        }
    }

    /// Takes the outcome of the op `store_loop` performed.
    fn store_done(&mut self, op: &Op, r: std::io::Result<()>, now: Instant) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Err(e) = &r {
            ShardStats::inc(&self.stats.storage_errors);
            tracing::error!(
                shard = self.id.0,
                op = ?OpName(op),
                error = %e,
                "the shard's log failed: publishes to its topics are refused until it restarts"
            );
        } else if let Op::Write { data, .. } = op {
            ShardStats::inc(&self.stats.storage_batches);
            ShardStats::add(&self.stats.storage_bytes_written, data.len() as u64);
        }
        match store.log.complete(r.is_ok()) {
            Progress::None => {}
            Progress::Recovered => {
                tracing::info!(shard = self.id.0, "the log's recovery write is durable");
            }
            Progress::Durable(t) => {
                let (segment, end) = store.log.head();
                let now_us = wall_clock_micros();
                match store.segs.back_mut() {
                    Some(s) if s.id == segment => {
                        s.bytes = end;
                        s.newest_us = now_us;
                    }
                    _ => store.segs.push_back(SegInfo {
                        id: segment,
                        bytes: end,
                        newest_us: now_us,
                    }),
                }
                self.store_gauges();
                self.release(t, now);
            }
            Progress::Failed(_) => self.fail_waiting(),
        }
    }

    /// History, fan-out and answers for every waiting publish up to ticket `upto`.
    fn release(&mut self, upto: u64, now: Instant) {
        let keys_max = self.cfg.idempotency_keys_max;
        let (segment, base) = self
            .store
            .as_ref()
            .map_or((0, 0), |s| s.log.durable_batch());
        let now_s = (wall_clock_micros() / 1_000_000) as u32;
        let mut targets = std::mem::take(&mut self.scratch_shards);
        while let Some(w) = self
            .store
            .as_mut()
            .and_then(|s| {
                s.waiting
                    .front()
                    .is_some_and(|w| w.ticket <= upto)
                    .then(|| s.waiting.pop_front())
            })
            .flatten()
        {
            let mut durability = Durability::Memory;
            if let Some(s) = self.store.as_mut() {
                durability = s.durability;
                if let Some(k) = &w.idempotency_key {
                    s.keyed
                        .remove(&(w.key.clone(), w.msg.publisher_id.clone(), k.clone()));
                }
            }
            let published = Published {
                epoch: w.msg.epoch,
                seq: w.msg.seq,
                durability,
            };
            ShardStats::inc(&self.stats.storage_records);
            if let Some(topic) = self.owned.get_mut(&w.key) {
                topic.stored();
                topic.history.push(now, w.msg.clone());
                // Offsets fit 32 bits: a segment ends once a batch would pass segment_bytes
                // (validated to fit), and one batch is at most the backlog limit past it.
                let loc = Loc {
                    segment,
                    offset: (base + w.at) as u32,
                    len: w.len,
                    at_s: now_s,
                };
                topic.on_disk.push(w.msg.epoch, w.msg.seq, loc);
                if let Some(k) = w.idempotency_key {
                    let evicted =
                        topic
                            .dedup
                            .insert(w.msg.publisher_id.clone(), k, published, now, keys_max);
                    ShardStats::add(&self.stats.idempotency_keys_evicted, evicted as u64);
                }
                topic.check();
                targets.extend_from_slice(topic.interested());
            }
            ShardStats::inc(&self.stats.publishes);
            self.fan_out(&w.key, &w.msg, &targets, now);
            targets.clear();
            for a in w.answer.into_iter().chain(w.repeats) {
                self.answer(a, Ok(published));
            }
        }
        self.scratch_shards = targets;
    }

    /// The log failed: every waiting publish is refused, and its sequence given back (they
    /// are the last ones of their topics, and nobody saw them).
    fn fail_waiting(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let failed: Vec<Waiting> = store.waiting.drain(..).collect();
        store.keyed = Default::default();
        for w in failed.into_iter().rev() {
            if let Some(t) = self.owned.get_mut(&w.key) {
                t.unorder();
            }
            ShardStats::inc(&self.stats.storage_refused);
            for a in w.answer.into_iter().chain(w.repeats) {
                self.answer(a, Err(PublishError::StorageUnavailable));
            }
        }
    }

    /// Retention (from the sweep): the oldest whole segments go while the log is over its
    /// byte limit, or while their newest message is older than the age limit. The segment
    /// taking appends stays.
    pub(crate) fn store_retention(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let now_us = wall_clock_micros();
        let cutoff = now_us.saturating_sub(store.cfg.retention_age.as_micros() as u64);
        let (messages, bytes) = (
            store.cfg.topic_retention_messages,
            store.cfg.topic_retention_bytes,
        );
        // Per topic: what each topic keeps, and the oldest segment any of them still needs.
        let mut needed = u64::MAX;
        for t in self.owned.values_mut() {
            t.on_disk.trim(messages, bytes, (cutoff / 1_000_000) as u32);
            if let Some(s) = t.on_disk.oldest_segment() {
                needed = needed.min(s);
            }
        }
        // Per shard: the log's bytes and age.
        let mut total: u64 = store.segs.iter().map(|s| s.bytes).sum();
        let mut through = None;
        while store.segs.len() > 1 {
            let Some(old) = store.segs.front() else { break };
            if total <= store.cfg.retention_bytes && old.newest_us >= cutoff && old.id >= needed {
                break;
            }
            total -= old.bytes;
            through = Some(old.id);
            store.segs.pop_front();
        }
        if let Some(id) = through {
            let doomed = store.log.delete_through(id);
            for t in self.owned.values_mut() {
                t.on_disk.forget_through(id);
            }
            let Some(store) = self.store.as_mut() else {
                return;
            };
            ShardStats::add(&self.stats.storage_segments_deleted, doomed.len() as u64);
            store.doomed.extend(doomed);
            store.wake();
            self.store_gauges();
        }
    }

    fn store_gauges(&self) {
        if let Some(s) = &self.store {
            ShardStats::set(&self.stats.storage_segments, s.segs.len() as u64);
            ShardStats::set(
                &self.stats.storage_bytes,
                s.segs.iter().map(|s| s.bytes).sum(),
            );
        }
    }

    /// Takes one message record read back at start-up into its topic.
    fn recover_record(
        &mut self,
        r: Record,
        loc: Loc,
        now: Instant,
        now_us: u64,
        renew: &mut AHashSet<TopicKey>,
        gaps: &mut u64,
    ) {
        let Ok(name) = std::str::from_utf8(&r.topic) else {
            return;
        };
        let Some((ns, topic)) = name.split_once('/') else {
            return;
        };
        let Ok(key) = TopicKey::parse(ns, topic, self.cfg.name_bytes_max) else {
            return;
        };
        let cfg = self.cfg.clone();
        let t = self.owned.recovered(&key, Epoch(r.epoch), Seq(r.seq), &cfg);
        if r.epoch == t.epoch.0 && r.seq > t.next_seq.0 {
            // Records of this epoch that did not come back (damage, reported by the scan):
            // a hole in the sequence. The topic keeps its epoch; the index keeps the hole, so
            // a reader crossing it is told exactly which sequences are gone.
            tracing::error!(
                shard = self.id.0,
                topic = %key,
                epoch = r.epoch,
                first_lost = t.next_seq.0,
                last_lost = r.seq - 1,
                "messages lost from the log: readers crossing them get a discontinuity"
            );
            ShardStats::add(&self.stats.storage_lost_messages, r.seq - t.next_seq.0);
            *gaps += r.seq - t.next_seq.0;
        } else if r.epoch != t.epoch.0 || r.seq != t.next_seq.0 {
            if r.epoch <= t.epoch.0 {
                // A sequence (or epoch) going back: the log never holds one. The topic is
                // told as if it were damage.
                tracing::warn!(topic = %key, epoch = r.epoch, expected = t.next_seq.0, found = r.seq, "a sequence going back in the log");
                renew.insert(key.clone());
            }
            t.restart(Epoch(r.epoch), Seq(r.seq), &cfg);
        }
        t.next_seq = Seq(r.seq + 1);
        t.on_disk.push(t.epoch, Seq(r.seq), loc);
        let age = Duration::from_micros(now_us.saturating_sub(r.timestamp_us));
        let at = now.checked_sub(age).unwrap_or(now);
        let publisher: Option<Arc<str>> =
            (!r.publisher.is_empty()).then(|| String::from_utf8_lossy(&r.publisher).into());
        let mut msg = Message::new(
            t.epoch,
            Seq(r.seq),
            Bytes::from(r.payload),
            publisher.clone(),
        );
        msg.published_at = at;
        if !r.key.is_empty() && age < self.cfg.idempotency_window {
            let p = Published {
                epoch: t.epoch,
                seq: msg.seq,
                durability: Durability::Synced,
            };
            let k: Arc<str> = String::from_utf8_lossy(&r.key).into();
            t.dedup
                .insert(publisher, k, p, at, self.cfg.idempotency_keys_max);
        }
        t.history.push(at, msg);
        ShardStats::inc(&self.stats.storage_recovered);
    }

    /// What start-up's damage costs each topic, once every valid record is back (`marked`:
    /// the sequences recovery already found missing, as holes). A damaged record named by
    /// its header (topic, epoch, sequence) is a hole in its topic: the hole is already there
    /// when a later record of the topic came back; when none did, the sequence continues
    /// after the damaged one. Damaged bytes no header names: when the batches around them
    /// count what they held, and every message counted is a hole some topic already has, no
    /// topic lost more; otherwise the topics whose newest record lies before them start a new
    /// epoch (their newest messages may be among the lost ones, so their sequence cannot
    /// continue). A topic with a record after them knows exactly what it lost.
    fn take_damage(
        &mut self,
        damage: &[(u64, Damage)],
        mut marked: u64,
        renew: &mut AHashSet<TopicKey>,
    ) {
        let id = self.id.0;
        let mut named = 0u64;
        let mut unknown = Vec::new();
        for (seg, d) in damage {
            match d {
                Damage::Message { topic, epoch, seq } => {
                    let name = String::from_utf8_lossy(topic);
                    tracing::error!(shard = id, segment = seg, topic = %name, epoch, seq, "a damaged record in the log (its checksum fails): that message is lost");
                    let key = name
                        .split_once('/')
                        .and_then(|(ns, t)| TopicKey::parse(ns, t, self.cfg.name_bytes_max).ok());
                    let Some(key) = key else {
                        // Never written by a broker (names are checked before they are
                        // logged): nobody can ask for it.
                        continue;
                    };
                    match self.owned.get_mut(&key) {
                        Some(t) if t.epoch.0 > *epoch => {} // an older epoch: not served
                        Some(t) if t.epoch.0 == *epoch => {
                            if *seq < t.next_seq.0 {
                                named += 1; // a later record came back: the hole is there
                                continue;
                            }
                            if !t.on_disk.push_lost(t.epoch, Seq(*seq)) {
                                renew.insert(key);
                                continue;
                            }
                            let n = seq + 1 - t.next_seq.0;
                            ShardStats::add(&self.stats.storage_lost_messages, n);
                            marked += n;
                            named += 1;
                            t.next_seq = Seq(seq + 1);
                            // History holds consecutive messages up to the newest: what it
                            // had is before the hole, and stays readable from the disk.
                            t.history.clear();
                        }
                        // Nothing of its epoch came back: its sequence cannot continue.
                        _ => {
                            renew.insert(key);
                        }
                    }
                }
                Damage::Unknown { from, to, lost } => {
                    tracing::error!(
                        shard = id,
                        segment = seg,
                        from,
                        to,
                        messages = ?lost,
                        "damaged bytes in the log that no record header names"
                    );
                    unknown.push((*seg, *from as u64, *lost));
                }
            }
        }
        let counted: Option<u64> = unknown.iter().map(|u| u.2).sum();
        if unknown.is_empty() || counted.is_some_and(|n| named + n == marked) {
            return;
        }
        for (seg, from, _) in unknown {
            for (k, t) in self.owned.iter() {
                let newest = t.on_disk.last().map(|l| (l.segment, u64::from(l.offset)));
                if newest.is_none_or(|n| n < (seg, from)) {
                    renew.insert(k.clone());
                }
            }
        }
    }

    /// Gives each damaged topic a new epoch (subscribers resuming in the old one get a
    /// discontinuity), after recovery read everything.
    fn renew_epochs(&mut self, renew: AHashSet<TopicKey>) {
        let cfg = self.cfg.clone();
        for key in renew {
            let (old, new) = self.owned.renew(&key, &cfg);
            tracing::error!(
                shard = self.id.0,
                topic = %key,
                old_epoch = old.0,
                new_epoch = new.0,
                "damage in the log may have taken the topic's newest messages: it starts a new epoch (subscribers are told of the loss)"
            );
            ShardStats::inc(&self.stats.storage_renewed_topics);
        }
    }
}

/// The name of an op, for logs.
struct OpName<'a>(&'a Op);

impl std::fmt::Debug for OpName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Op::Create { segment } => write!(f, "create segment {segment}"),
            Op::Write {
                segment, offset, ..
            } => write!(f, "write segment {segment} at {offset}"),
            Op::Sync { segment } => write!(f, "sync segment {segment}"),
        }
    }
}

/// Opens the shard's log in `cfg.data_dir/shard-N`, reads it back into `state`'s topics, and
/// returns the device for [`store_loop`]. An error names the file and what is wrong.
pub(crate) async fn open(
    state: &Rc<RefCell<State>>,
    cfg: &StorageConfig,
) -> Result<Segments, String> {
    let id = state.borrow().id;
    let dir = cfg.data_dir.join(format!("shard-{}", id.0));
    let dev = Segments::new(&dir, cfg.segment_bytes, cfg.fsync == Fsync::Always)
        .map_err(|e| format!("cannot open the data dir {}: {e}", dir.display()))?;
    dev.probe().await.map_err(|e| {
        format!(
            "cannot write O_DIRECT files in {} (use a filesystem that supports them, such \
             as ext4 or xfs; tmpfs does only since Linux 6.6): {e}",
            dir.display()
        )
    })?;
    let ids = dev
        .list()
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let log_cfg = LogConfig {
        segment_bytes: cfg.segment_bytes,
        block_bytes: BLOCK_BYTES,
    };
    let mut rec = Recovery::new(log_cfg);
    let mut segs = VecDeque::new();
    let mut renew = AHashSet::new();
    // Sequences found missing inside their topics' epochs (holes).
    let mut gaps = 0u64;
    let (now, now_us) = (Instant::now(), wall_clock_micros());
    for (i, &seg) in ids.iter().enumerate() {
        let bytes = dev
            .read(seg)
            .await
            .map_err(|e| format!("cannot read segment {seg} in {}: {e}", dir.display()))?;
        let mut newest_us = 0;
        let mut st = state.borrow_mut();
        rec.segment(seg, &bytes, i + 1 == ids.len(), |seg, at, r| {
            // Offsets fit 32 bits (see `release`); the record's length is its encoded one.
            let loc = Loc {
                segment: seg,
                offset: at as u32,
                len: r.encoded_len() as u32,
                at_s: (r.timestamp_us / 1_000_000) as u32,
            };
            newest_us = newest_us.max(r.timestamp_us);
            st.recover_record(r, loc, now, now_us, &mut renew, &mut gaps);
        });
        segs.push_back(SegInfo {
            id: seg,
            bytes: bytes.len() as u64,
            newest_us: if newest_us == 0 { now_us } else { newest_us },
        });
    }
    let (log, found) = rec.finish();
    let mut st = state.borrow_mut();
    if !found.damage.is_empty() {
        ShardStats::add(&st.stats.storage_damaged, found.damage.len() as u64);
        st.take_damage(&found.damage, gaps, &mut renew);
    }
    if found.cut > 0 {
        ShardStats::add(&st.stats.storage_cut_bytes, found.cut as u64);
        tracing::warn!(
            shard = id.0,
            bytes = found.cut,
            "cut a torn tail from the log (a batch that was never acknowledged)"
        );
    }
    if cfg.unsynced_loss {
        // The machine restarted under a broker that did not sync its writes: what it had
        // acknowledged last may be gone, and nothing on disk says which topics lost what.
        renew.extend(st.owned.iter().map(|(k, _)| k.clone()));
    }
    st.renew_epochs(renew);
    if cfg!(debug_assertions) {
        st.owned.check_all();
    }
    ShardStats::set(&st.stats.topics, st.owned.len() as u64);
    let recovered = st
        .stats
        .storage_recovered
        .load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(shard = id.0, dir = %dir.display(), segments = ids.len(), messages = recovered, topics = st.owned.len(), "log read back");
    st.store = Some(Store {
        log,
        cfg: cfg.clone(),
        waiting: VecDeque::new(),
        waker: None,
        segs,
        doomed: VecDeque::new(),
        durability: match cfg.fsync {
            Fsync::Always => Durability::Synced,
            Fsync::Never => Durability::Written,
        },
        keyed: Default::default(),
        stopping: false,
        reads: VecDeque::new(),
        read_waker: None,
    });
    st.store_gauges();
    Ok(dev)
}

/// Work for [`store_loop`].
enum Work {
    Op(Op),
    Delete(u64),
    Stop,
}

/// Performs the shard's log I/O, one op at a time, until the shard is done (`Store::stopping`,
/// set once its mesh closed: publishes from other shards may arrive until then) and nothing
/// waits.
pub(crate) async fn store_loop(state: Rc<RefCell<State>>, mut dev: Segments) {
    loop {
        let work = std::future::poll_fn(|cx| {
            let mut st = state.borrow_mut();
            let Some(store) = st.store.as_mut() else {
                return Poll::Ready(Work::Stop);
            };
            if let Some(op) = store.log.next_op() {
                return Poll::Ready(Work::Op(op));
            }
            if let Some(seg) = store.doomed.pop_front() {
                return Poll::Ready(Work::Delete(seg));
            }
            if store.stopping && store.waiting.is_empty() {
                return Poll::Ready(Work::Stop);
            }
            store.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        match work {
            Work::Stop => break,
            Work::Delete(seg) => {
                if let Err(e) = dev.remove(seg) {
                    tracing::warn!(segment = seg, dir = %dev.dir().display(), error = %e, "cannot delete a segment retention gave up");
                }
            }
            Work::Op(op) => {
                let skip = matches!(op, Op::Sync { .. })
                    && state
                        .borrow()
                        .store
                        .as_ref()
                        .is_some_and(|s| s.cfg.fsync == Fsync::Never);
                let r = if skip { Ok(()) } else { dev.perform(&op).await };
                with_state(&state, |st| st.store_done(&op, r, Instant::now()));
            }
        }
    }
    // A clean stop leaves nothing unsynced, `fsync = "never"` included, so a machine restart
    // after it costs nothing (the data dir's lock file says the stop was clean).
    let never = state
        .borrow()
        .store
        .as_ref()
        .map(|s| (s.cfg.fsync == Fsync::Never, s.log.head()));
    // (Nothing to sync before the first batch created a segment.)
    if let Some((true, (segment, _))) = never.filter(|(_, (_, end))| *end > 0) {
        if let Err(e) = dev.perform(&Op::Sync { segment }).await {
            tracing::warn!(segment, error = %e, "cannot sync the log on the way out");
        }
    }
    let _ = dev.close().await;
}
