//! A seeded simulation of the shard log as the broker runs it: the [`Log`], the segment
//! device (`log/dma.rs`, the broker's own code) and recovery (`Segments::probe`, `list` and
//! `read`, and [`Recovery`], in the order `shard/store.rs`'s `open` calls them), over an
//! in-memory file system that crashes (`log/memfs.rs`: writes that are not durable until an
//! fdatasync, or at once under O_DSYNC; O_DIRECT alignment; preallocation that keeps the size;
//! file sizes that grow and may be lost; directory entries that need a directory sync; torn
//! sectors).
//!
//! A run appends records, performs the log's I/O, deletes old segments (retention), and
//! crashes: a power loss (any subset of what was not durable lands, sector by sector) or a
//! process crash (the kernel keeps what it was given), between any two file-system calls
//! (inside an op too: between the zeros that extend a segment and the write they make room
//! for) and during recovery itself, so restarts come several in a row. Each run is O_DSYNC
//! (`fsync = "always"`) or fdatasync, with a random log block, segment size and zero step.
//! A quarter of the runs also fail writes and fdatasyncs (EIO), and half of those flip bits in
//! durable data (one per file: two in one batch can pass for a torn write).
//!
//! Checked after every recovery:
//!
//! - every record that comes back was appended, byte for byte, and they come back in the order
//!   they were appended, each once;
//! - every acknowledged record comes back, at the place it was acknowledged at. Acknowledged:
//!   a [`Progress::Durable`] covered it, or a recovery read it back and the log then reported
//!   [`Progress::Recovered`] or acknowledged a later record. Records never acknowledged may
//!   come back or not. In a run that flipped a bit, a lost one is named by the damage report
//!   instead, or the report has unreadable bytes;
//! - in a run without flipped bits, no damage names an acknowledged record and recovery never
//!   adopts one (its commit record is never lost);
//! - reading the disk again, with nothing written in between, gives the same recovery.
//!
//! And while the log runs: an op fails only with a fault the disk injected (never, say, an
//! unaligned O_DIRECT write), and an acknowledged record reads back where the log said it is
//! (the catch-up read, `Segments::read_span`).
//!
//! Not modelled: the rest of the shard (topics, the index, catch-up's scheduling, the ops
//! `store_loop` skips with `fsync = "never"`, which promises nothing), running out of space,
//! failed reads, disks that lie about a completed write or a flush, and a page cache whose
//! pages a failed fsync marks clean (the segments are O_DIRECT).
//!
//! `cargo test -p fanfare-core log::sim` runs 300 seeds of 2,000 steps and the regression
//! seeds; `FANFARE_SIM_SEEDS=n` runs seeds 0..n instead (faster with `--release`; every
//! failing seed is printed), `FANFARE_SIM_STEPS=n` makes each run longer;
//! `FANFARE_SIM_SEED=n cargo test -p fanfare-core log::sim -- --nocapture` replays one, with a
//! trace of every op, file-system call and crash (with the same `FANFARE_SIM_STEPS`).

use std::collections::BTreeMap;
use std::path::Path;

use futures_lite::future::block_on;

use super::dma::{Segments, ZERO_STEP};
use super::memfs::{Crash, MemFs, Rng};
use super::{decode_at, Damage, Kind, Log, LogConfig, Op, Progress, Record, Recovery};

/// The shard's directory on the simulated disk.
const DIR: &str = "/data/shard-0";

/// A run's shape, picked by its seed.
#[derive(Clone, Copy, Debug)]
struct Shape {
    cfg: LogConfig,
    dsync: bool,
    zero_step: u64,
    /// Writes and fdatasyncs fail this often.
    eio_per_mille: u64,
    /// Bits flip in durable data.
    flips: bool,
}

impl Shape {
    fn pick(rng: &mut Rng) -> Self {
        let block_bytes = if rng.chance(500) { 512 } else { 4096 };
        let segment_bytes = 4096 + rng.below(16384);
        // Small steps keep the disk small; now and then the broker's own.
        let zero_step = match rng.below(32) {
            0 => ZERO_STEP,
            1..=15 => 512 << rng.below(4),
            _ => 4096 << rng.below(3),
        };
        let faults = rng.chance(250);
        Shape {
            cfg: LogConfig {
                segment_bytes,
                block_bytes,
            },
            dsync: rng.chance(600),
            zero_step,
            eio_per_mille: if faults { 5 } else { 0 },
            flips: faults && rng.chance(500),
        }
    }
}

/// What one recovery found.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    ids: Vec<u64>,
    records: Vec<(u64, u64, Record)>,
    damage: Vec<(u64, Damage)>,
    cut: usize,
    uncommitted: usize,
}

/// Counts over a run (printed by long runs).
#[derive(Default, Debug)]
struct Stats {
    ops: u64,
    crashes: u64,
    recoveries: u64,
    acked: u64,
    adopted: u64,
    damage_without_flips: u64,
    failed: u64,
}

struct Sim {
    seed: u64,
    trace: bool,
    rng: Rng,
    /// Picks cuts: a stream of its own, so the main one runs the same until a cut lands.
    cuts: Rng,
    shape: Shape,
    fs: MemFs,
    /// Every record appended (and accepted), by id: its sequence, and its payload's first 8
    /// bytes.
    appended: Vec<Record>,
    /// Acknowledged records that retention has not deleted: id → segment and offset.
    acked: BTreeMap<u64, (u64, u64)>,
    /// The running log and its device.
    log: Log,
    dev: Segments<MemFs>,
    /// Records appended to this log and not yet durable: ticket → id, and where in its batch
    /// it starts.
    tickets: BTreeMap<u64, (u64, u64)>,
    /// What the last recovery read back: acknowledged once the log reports `Recovered` (its
    /// records are all durable then, adopted ones committed), or anything after them.
    recovered: Vec<(u64, (u64, u64))>,
    /// Bits flipped so far. A flip may surface long after it happened (a power loss undoes
    /// the write that hid it), so a run that flipped one checks the weaker invariants from
    /// then on.
    flips: usize,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Self {
        let mut rng = Rng::new(seed);
        let shape = Shape::pick(&mut rng);
        Self::with_shape(seed, rng, shape, trace)
    }

    fn with_shape(seed: u64, rng: Rng, shape: Shape, trace: bool) -> Self {
        if trace {
            eprintln!("seed {seed}: {shape:?}");
        }
        let fs = MemFs::new(seed, trace);
        let dev = Self::device(&fs, &shape).unwrap();
        Sim {
            seed,
            trace,
            rng,
            cuts: Rng::new(!seed),
            shape,
            fs,
            appended: Vec::new(),
            acked: BTreeMap::new(),
            log: Log::new(shape.cfg, 0),
            dev,
            tickets: BTreeMap::new(),
            recovered: Vec::new(),
            flips: 0,
            stats: Stats::default(),
        }
    }

    fn device(fs: &MemFs, shape: &Shape) -> std::io::Result<Segments<MemFs>> {
        let reserve = shape.cfg.segment_bytes;
        Ok(Segments::with_fs(fs.clone(), DIR, reserve, shape.dsync)?.zero_step(shape.zero_step))
    }

    /// One run of `steps` steps; panics on a broken invariant, naming the seed.
    fn run(&mut self, steps: usize) {
        // The broker's start: an empty directory, opened and read back.
        self.fs.crash(Crash::Process);
        self.restart();
        for _ in 0..steps {
            match self.rng.below(100) {
                0..=44 => self.append(),
                45..=84 => self.io(),
                85..=86 => self.retention(),
                87 if self.shape.flips && self.rng.chance(200) => {
                    if self.fs.flip() {
                        self.flips += 1;
                    }
                }
                _ => {
                    let pending = self.log.pending() > 0 || self.log.is_failed();
                    if self.rng.chance(60) || pending && self.rng.chance(40) {
                        let how = self.crash_kind();
                        self.fs.crash(how);
                    }
                }
            }
            if self.fs.dead().is_some() {
                self.restart();
            }
        }
    }

    fn crash_kind(&mut self) -> Crash {
        if self.rng.chance(700) {
            Crash::Power
        } else {
            Crash::Process
        }
    }

    fn append(&mut self) {
        let id = self.appended.len() as u64;
        let max = if self.rng.chance(50) { 3000 } else { 200 };
        let len = self.rng.below(max) as usize;
        let mut payload = id.to_le_bytes().to_vec();
        payload.extend((0..len).map(|_| self.rng.next() as u8));
        let r = Record {
            kind: Kind::Message,
            topic: format!("ns/t{}", self.rng.below(5)).into_bytes(),
            epoch: 1,
            seq: id,
            timestamp_us: id,
            publisher: b"sim".to_vec(),
            key: if self.rng.chance(200) {
                id.to_string().into_bytes()
            } else {
                Vec::new()
            },
            payload,
        };
        let at = self.log.staged_bytes() as u64;
        if let Ok(t) = self.log.append(r.as_ref()) {
            self.tickets.insert(t, (id, at));
            self.appended.push(r);
        }
    }

    fn io(&mut self) {
        let Some(op) = self.log.next_op() else {
            return;
        };
        if self.rng.chance(40) {
            // The process dies a few file-system calls from now: inside this op, or later.
            let how = self.crash_kind();
            self.fs.arm(self.rng.below(6), how);
        }
        self.perform(op);
    }

    /// Performs the log's ops until none is due (or the process dies).
    fn settle(&mut self) {
        while let Some(op) = self.log.next_op() {
            self.perform(op);
            if self.fs.dead().is_some() {
                return;
            }
        }
    }

    fn perform(&mut self, op: Op) {
        self.stats.ops += 1;
        if self.trace {
            eprintln!("  op: {}", op_name(&op));
        }
        let r = block_on(self.dev.perform(&op));
        if self.fs.dead().is_some() {
            return; // the process is gone: nobody hears of the op
        }
        if let Err(e) = &r {
            self.stats.failed += 1;
            if self.trace {
                eprintln!("  op failed: {e}");
            }
            // Only the disk's faults fail an op: any other error (O_DIRECT refusing an
            // unaligned write, a file that is not there) is the device's own mistake.
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EIO),
                "seed {}: {} failed: {e}",
                self.seed,
                op_name(&op)
            );
        }
        match self.log.complete(r.is_ok()) {
            Progress::Durable(upto) => {
                // Acknowledged records follow what recovery read back: it must be durable by
                // now (without a hole before them), `Recovered` or not.
                self.promote_recovered();
                let (segment, base) = self.log.durable_batch();
                let rest = self.tickets.split_off(&(upto + 1));
                let done = std::mem::replace(&mut self.tickets, rest);
                for (id, at) in done.into_values() {
                    self.acked.insert(id, (segment, base + at));
                    self.stats.acked += 1;
                    self.catch_up(id, segment, base + at);
                }
            }
            Progress::Failed(_) => self.tickets.clear(),
            Progress::Recovered => self.promote_recovered(),
            Progress::None => {}
        }
    }

    /// What the last recovery read back counts as acknowledged from now on (unless retention
    /// deleted its segment since).
    fn promote_recovered(&mut self) {
        let live: Vec<u64> = self.log.segments().collect();
        let recovered = std::mem::take(&mut self.recovered);
        self.acked.extend(
            recovered
                .into_iter()
                .filter(|(_, (seg, _))| live.contains(seg)),
        );
    }

    /// A catch-up read of an acknowledged record, where the log says it is.
    fn catch_up(&mut self, id: u64, segment: u64, offset: u64) {
        if self.flips > 0 {
            return; // a flipped bit may be in it: recovery will say so
        }
        let want = &self.appended[id as usize];
        let len = want.as_ref().encoded_len();
        let read = Segments::read_span_on(&self.fs, Path::new(DIR), segment, offset, len);
        match block_on(read) {
            Ok(bytes) => assert_eq!(
                decode_at(&bytes, 0).as_ref(),
                Some(want),
                "seed {}: record {id} does not read back at {segment}@{offset}",
                self.seed
            ),
            Err(_) if self.fs.dead().is_some() => {}
            Err(e) => panic!(
                "seed {}: catch-up read of {segment}@{offset}: {e}",
                self.seed
            ),
        }
    }

    fn retention(&mut self) {
        let Some(first) = self.log.segments().next() else {
            return;
        };
        let doomed = self.log.delete_through(first);
        for &s in &doomed {
            // Retention gave the segment up: its records may come back after a crash (the
            // unlink is not durable until the directory is synced), or not.
            self.acked.retain(|_, (seg, _)| *seg != s);
            if self.trace {
                eprintln!("  delete segment {s}");
            }
            if let Err(e) = self.dev.remove(s) {
                if self.fs.dead().is_some() {
                    return;
                }
                panic!("seed {}: cannot delete segment {s}: {e}", self.seed);
            }
        }
    }

    /// After a crash: the machine comes back, and the shard opens its log again (crashing
    /// during that too, sometimes); checks what came back.
    fn restart(&mut self) {
        let mut first = true;
        let found = loop {
            let how = self.fs.restart();
            if std::mem::take(&mut first) {
                self.cut();
            }
            self.stats.crashes += 1;
            if self.trace {
                eprintln!("crash ({how:?}); recovering");
            }
            if self.rng.chance(150) {
                let how = self.crash_kind();
                self.fs.arm(self.rng.below(12), how);
            }
            self.fs.set_eio(0);
            let opened = self.open();
            match opened {
                Ok((dev, log, found)) => {
                    self.dev = dev;
                    self.log = log;
                    break found;
                }
                Err(_) if self.fs.dead().is_some() => continue,
                Err(e) => panic!("seed {}: recovery failed: {e}", self.seed),
            }
        };
        self.stats.recoveries += 1;
        if self.trace {
            eprintln!(
                "recovered: segments {:?}, {} records, damage {:?}, {} bytes cut, {} adopted",
                found.ids,
                found.records.len(),
                found.damage,
                found.cut,
                found.uncommitted
            );
        }
        // Reading again changes nothing.
        self.fs.disarm();
        match self.open() {
            Ok((_, _, again)) => assert_eq!(
                again, found,
                "seed {}: a second recovery reads differently",
                self.seed
            ),
            Err(e) => panic!("seed {}: a second recovery failed: {e}", self.seed),
        }
        self.fs.set_eio(self.shape.eio_per_mille);
        self.check(&found);
        self.tickets.clear();
        self.stats.adopted += found.uncommitted as u64;
        self.recovered = found
            .records
            .iter()
            .map(|(seg, at, r)| (id_of(r).unwrap_or(u64::MAX), (*seg, *at)))
            .collect();
    }

    /// In a run with faults, now and then, after a crash.
    fn cut(&mut self) {
        if self.shape.eio_per_mille > 0 && self.cuts.chance(30) {
            // Someone cuts the last segment at any byte past what the log made durable there
            // (only what was never acknowledged is lost): its size is no block's multiple.
            let (segment, end) = self.log.head();
            let path = Path::new(DIR).join(format!("{segment:020}.seg"));
            if let Some(size) = self.fs.size(&path) {
                let at = end as usize
                    + self
                        .cuts
                        .below(size.saturating_sub(end as usize) as u64 + 1)
                        as usize;
                if self.trace {
                    eprintln!("cut {} at {at}", path.display());
                }
                self.fs.cut(&path, at);
            }
        }
    }

    /// `shard/store.rs`'s `open`: the device, its probe, the segments read back in order.
    fn open(&self) -> std::io::Result<(Segments<MemFs>, Log, Found)> {
        let dev = Self::device(&self.fs, &self.shape)?;
        block_on(dev.probe())?;
        let ids = dev.list()?;
        let mut rec = Recovery::new(self.shape.cfg);
        let mut records = Vec::new();
        for (i, &seg) in ids.iter().enumerate() {
            let bytes = block_on(dev.read(seg))?;
            rec.segment(seg, &bytes, i + 1 == ids.len(), |s, at, r| {
                records.push((s, at, r))
            });
        }
        let (log, found) = rec.finish();
        let found = Found {
            ids,
            records,
            damage: found.damage,
            cut: found.cut,
            uncommitted: found.uncommitted,
        };
        Ok((dev, log, found))
    }

    fn check(&mut self, found: &Found) {
        let seed = self.seed;
        let mut back = BTreeMap::new();
        let mut last = None;
        for (seg, at, r) in &found.records {
            let id = id_of(r);
            assert!(
                id.and_then(|id| self.appended.get(id as usize)) == Some(r),
                "seed {seed}: a record came back at {seg}@{at} that was never appended as such"
            );
            let id = id.unwrap_or(u64::MAX);
            assert!(
                last < Some(id),
                "seed {seed}: record {id} came back out of order (after {last:?})"
            );
            last = Some(id);
            back.insert(id, (*seg, *at));
        }
        let unknown = found
            .damage
            .iter()
            .any(|(_, d)| matches!(d, Damage::Unknown { .. }));
        let appended = &self.appended;
        let named = |id: u64| {
            found.damage.iter().any(|(_, d)| {
                matches!(d, Damage::Message { topic, seq, .. }
                    if *seq == id && *topic == appended[id as usize].topic)
            })
        };
        let mut lost = Vec::new();
        for (&id, &place) in &self.acked {
            match back.get(&id) {
                Some(&at) => assert_eq!(
                    at, place,
                    "seed {seed}: acknowledged record {id} came back elsewhere"
                ),
                None if self.flips == 0 => panic!(
                    "seed {seed}: acknowledged record {id} (segment {}, offset {}) lost",
                    place.0, place.1
                ),
                None => {
                    assert!(
                        named(id) || unknown,
                        "seed {seed}: acknowledged record {id} lost silently"
                    );
                    lost.push(id);
                }
            }
        }
        if self.flips == 0 {
            if !found.damage.is_empty() {
                self.stats.damage_without_flips += 1;
            }
            for id in self.acked.keys() {
                assert!(
                    !named(*id),
                    "seed {seed}: acknowledged record {id} reported damaged"
                );
            }
            let adopted = &found.records[found.records.len() - found.uncommitted..];
            for (_, _, r) in adopted {
                let id = id_of(r).unwrap_or(u64::MAX);
                assert!(
                    !self.acked.contains_key(&id),
                    "seed {seed}: acknowledged record {id} adopted (its commit record was lost)"
                );
            }
        }
        // Reported: what is on disk now is the truth.
        for id in lost {
            self.acked.remove(&id);
        }
    }
}

/// A record's id: the first 8 bytes of its payload.
fn id_of(r: &Record) -> Option<u64> {
    let b: [u8; 8] = r.payload.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn op_name(op: &Op) -> String {
    match op {
        Op::Create { segment } => format!("create {segment}"),
        Op::Write {
            segment,
            offset,
            data,
        } => format!("write {segment}@{offset}+{}", data.len()),
        Op::Sync { segment } => format!("sync {segment}"),
    }
}

#[cfg(test)]
mod tests;
