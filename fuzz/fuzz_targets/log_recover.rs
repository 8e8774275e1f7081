//! Recovery of a shard log from arbitrary bytes (what a damaged disk hands back): never a
//! panic; every record recovery returns is the bytes at its offset, byte for byte up to its
//! padding (it passed both checksums; the padding to 8 bytes is not covered); and the log it
//! returns goes on working.
#![no_main]
use fanfare_core::log::record::HEADER_BYTES;
use fanfare_core::log::{Kind, Log, LogConfig, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    // The first byte says where the first segment ends (in 64-byte steps): two segments.
    let at = (usize::from(split) * 64).min(rest.len());
    let segments = vec![(0u64, rest[..at].to_vec()), (1u64, rest[at..].to_vec())];
    let cfg = LogConfig {
        segment_bytes: 4096,
        block_bytes: 512,
    };
    let (mut log, rec) = Log::recover(cfg, segments.clone());
    for (seg, off, r) in &rec.records {
        let mut enc = Vec::new();
        r.encode(&mut enc).expect("a recovered record encodes");
        let bytes = &segments[*seg as usize].1;
        let off = *off as usize;
        let len = HEADER_BYTES + r.topic.len() + r.publisher.len() + r.key.len() + r.payload.len();
        assert_eq!(&bytes[off..off + len], &enc[..len], "record at {seg}:{off}");
    }
    // Appends and I/O after recovery.
    let r = Record {
        kind: Kind::Message,
        topic: b"ns/t".to_vec(),
        epoch: 1,
        seq: 1,
        timestamp_us: 1,
        publisher: Vec::new(),
        key: Vec::new(),
        payload: b"after".to_vec(),
    };
    let _ = log.append(r.as_ref());
    for _ in 0..8 {
        if log.next_op().is_none() {
            break;
        }
        log.complete(true);
    }
});
