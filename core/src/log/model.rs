//! quickcheck: the log against a simple model (a list of acknowledged records), over a disk
//! that fails only by losing what was not synced when the process crashes. After any
//! sequence of appends, I/O steps, crashes and recoveries:
//!
//! - `Durable(t)` always covers a prefix: tickets become durable in order, each once;
//! - recovery gives back exactly the acknowledged records, in order, and nothing else (no
//!   damage, nothing cut that was acknowledged), plus, at most, the one batch whose write
//!   reached the disk before its sync completed (written whole, adopted);
//! - appends after a recovery continue the log, and a second recovery reads the same.

use std::collections::BTreeMap;

use quickcheck::{quickcheck, Arbitrary, Gen};

use super::{Kind, Log, LogConfig, Op, Progress, Record};

#[derive(Clone, Debug)]
enum Step {
    /// Append a record with this payload length and topic.
    Append(u16, u8),
    /// Perform the log's next op.
    Io,
    /// Crash: unsynced writes are lost; recover.
    Crash,
}

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 10 {
            0..=3 => Step::Append(u16::arbitrary(g) % 3000, u8::arbitrary(g) % 4),
            4..=8 => Step::Io,
            _ => Step::Crash,
        }
    }
}

const CFG: LogConfig = LogConfig {
    segment_bytes: 16 << 10, // small: many segments roll
    block_bytes: 512,
};

/// Segments: what a crash keeps, and what only the page cache holds.
#[derive(Default)]
struct Disk {
    durable: BTreeMap<u64, Vec<u8>>,
    cache: BTreeMap<u64, Vec<u8>>,
}

impl Disk {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { segment } => {
                self.cache.insert(*segment, Vec::new());
                self.durable.insert(*segment, Vec::new());
            }
            Op::Write {
                segment,
                offset,
                data,
            } => {
                let f = self.cache.entry(*segment).or_default();
                let end = *offset as usize + data.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[*offset as usize..end].copy_from_slice(data);
            }
            Op::Sync { segment } => {
                let c = self.cache.get(segment).cloned().unwrap_or_default();
                self.durable.insert(*segment, c);
            }
        }
    }

    fn crash(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.cache = self.durable.clone();
        self.durable.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

fn record(n: u64, len: u16, topic: u8) -> Record {
    Record {
        kind: Kind::Message,
        topic: format!("ns/t{topic}").into_bytes(),
        epoch: 1,
        seq: n,
        timestamp_us: n,
        publisher: Vec::new(),
        key: Vec::new(),
        payload: (0..len).map(|i| (i as u64 ^ n) as u8).collect(),
    }
}

fn run(steps: Vec<Step>) -> bool {
    let mut disk = Disk::default();
    let mut log = Log::new(CFG, 0);
    let mut acked: Vec<Record> = Vec::new();
    // This incarnation's appends by ticket, and the last ticket acknowledged.
    let mut by_ticket: BTreeMap<u64, Record> = BTreeMap::new();
    let mut durable_upto = 0;
    let mut n = 0;
    let mut in_op: Option<Op> = None;
    for step in steps.into_iter().chain([Step::Crash]) {
        match step {
            Step::Append(len, topic) => {
                n += 1;
                let r = record(n, len, topic);
                let Ok(t) = log.append(r.as_ref()) else {
                    return false; // nothing fails here
                };
                by_ticket.insert(t, r);
            }
            Step::Io => {
                let op = match in_op.take().or_else(|| log.next_op()) {
                    Some(op) => op,
                    None => continue,
                };
                disk.apply(&op);
                match log.complete(true) {
                    Progress::Durable(t) => {
                        if t <= durable_upto {
                            return false; // durable in order, each once
                        }
                        for (_, r) in by_ticket.range(durable_upto + 1..=t) {
                            acked.push(r.clone());
                        }
                        durable_upto = t;
                    }
                    Progress::Failed(_) => return false,
                    Progress::None | Progress::Recovered => {}
                }
            }
            Step::Crash => {
                let segments = disk.crash();
                let (recovered, rec) = Log::recover(CFG, segments.clone());
                if !rec.damage.is_empty() {
                    return false;
                }
                let back: Vec<Record> = rec.records.into_iter().map(|(_, _, r)| r).collect();
                // Exactly the acknowledged records, then at most records whose batch was
                // written whole before the crash (never acknowledged, adopted).
                if back.len() < acked.len() || back[..acked.len()] != acked[..] {
                    return false;
                }
                let extra = &back[acked.len()..];
                let appended: Vec<&Record> = by_ticket
                    .range(durable_upto + 1..)
                    .map(|(_, r)| r)
                    .collect();
                if extra.len() > appended.len() || extra.iter().zip(&appended).any(|(a, b)| a != *b)
                {
                    return false;
                }
                // Drive recovery's own write to completion, then the adopted records count.
                log = recovered;
                while let Some(op) = log.next_op() {
                    disk.apply(&op);
                    log.complete(true);
                }
                acked.extend(extra.iter().cloned());
                // A second read gives the same records.
                let (_, again) = Log::recover(CFG, disk.crash());
                let again: Vec<Record> = again.records.into_iter().map(|(_, _, r)| r).collect();
                if again != acked {
                    return false;
                }
                by_ticket.clear();
                durable_upto = 0;
                in_op = None;
            }
        }
    }
    true
}

#[test]
fn the_log_matches_its_model() {
    quickcheck(run as fn(Vec<Step>) -> bool);
}
