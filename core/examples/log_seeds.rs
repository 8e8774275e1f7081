//! Writes the seed corpus of the `log_recover` fuzz target: `cargo run -p fanfare-core
//! --example log_seeds -- fuzz/corpus/log_recover`. Each seed is what the target reads: one
//! byte saying where to split the rest into two segments, then the segments' bytes (a log
//! written by [`Log`] with no faults: batches, commit records, a rolled segment).

use std::path::Path;

use fanfare_core::log::{Kind, Log, LogConfig, Op, RecordRef};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/log_recover".into());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let cfg = LogConfig {
        segment_bytes: 2048,
        block_bytes: 512,
    };
    for (i, batches) in [1usize, 3, 9].into_iter().enumerate() {
        let mut log = Log::new(cfg, 0);
        let mut segs: Vec<Vec<u8>> = Vec::new();
        for b in 0..batches {
            for r in 0..3u64 {
                let payload = vec![b as u8; 40 + 30 * r as usize];
                let rec = RecordRef {
                    kind: Kind::Message,
                    topic: b"ns/t",
                    epoch: 7,
                    seq: (b * 3) as u64 + r + 1,
                    timestamp_us: 1,
                    publisher: b"p",
                    key: if r == 1 { b"k" } else { b"" },
                    payload: &payload,
                };
                if log.append(rec).is_err() {
                    return Err(std::io::Error::other("a seed record does not encode"));
                }
            }
            while let Some(op) = log.next_op() {
                match &op {
                    Op::Create { segment } => {
                        let s = *segment as usize;
                        if segs.len() <= s {
                            segs.resize(s + 1, Vec::new());
                        }
                    }
                    Op::Write {
                        segment,
                        offset,
                        data,
                    } => {
                        let f = &mut segs[*segment as usize];
                        let end = *offset as usize + data.len();
                        if f.len() < end {
                            f.resize(end, 0);
                        }
                        f[*offset as usize..end].copy_from_slice(data);
                    }
                    Op::Sync { .. } => {}
                }
                log.complete(true);
            }
        }
        let split = segs.first().map_or(0, Vec::len);
        let mut seed = vec![(split / 64).min(255) as u8];
        for s in &segs[..segs.len().min(2)] {
            seed.extend_from_slice(s);
        }
        std::fs::write(dir.join(format!("seed-{i}")), seed)?;
    }
    Ok(())
}
