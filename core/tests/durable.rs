//! Durable history end to end: real shards writing their logs through glommio's DMA files in
//! a directory under `target/` (O_DIRECT needs a real filesystem), stopped and started again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fanfare_core::{
    Broker, Config, Durability, Epoch, Event, PublishError, Seq, Start, StatsSnapshot,
    StorageConfig,
};

#[path = "../../tests/common/eventually.rs"]
mod eventually;
use eventually::eventually;

const WAIT: Duration = Duration::from_secs(10);

/// A fresh data dir under `target/tmp`, removed when the test ends.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> Self {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        DataDir(p)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &DataDir, shards: usize) -> Broker {
    Broker::builder()
        .shards(shards)
        .data_dir(&dir.0)
        .start()
        .expect("broker starts")
}

/// An engine configuration with `shards`, `history` messages in memory, and storage in `dir`
/// as `storage` adjusts it.
fn config(
    dir: &DataDir,
    shards: usize,
    history: usize,
    storage: impl FnOnce(&mut StorageConfig),
) -> Config {
    let mut cfg = Config::default();
    cfg.shards = shards;
    cfg.history_messages_max = history;
    let mut st = StorageConfig::new(&dir.0);
    storage(&mut st);
    cfg.storage = Some(st);
    cfg
}

fn total(b: &Broker) -> StatsSnapshot {
    b.stats_total()
}

/// Every item (and nothing else) the subscription delivers until `n` items arrived.
fn items(sub: &mut fanfare_core::Subscription, n: usize) -> Vec<(Epoch, Seq, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < n {
        match sub.next_timeout(WAIT) {
            Ok(Some(Event::Item(m))) => out.push((m.epoch, m.seq, m.payload.to_vec())),
            Ok(Some(Event::Heartbeat { .. })) => {}
            other => panic!("after {} items: expected an item, got {other:?}", out.len()),
        }
    }
    out
}

/// A subscription to `ns/topic` from `(epoch, 1)`.
fn from_start(b: &Broker, topic: &str, epoch: Epoch) -> fanfare_core::Subscription {
    b.subscribe_blocking(
        "ns",
        topic,
        Start::At {
            epoch: epoch.0,
            seq: 1,
        },
    )
    .expect("subscribe")
}

/// Publishes `n` messages (`body(i)`) to `ns/topic`; the topic's epoch.
fn publish_n(b: &Broker, topic: &str, n: usize, body: impl Fn(usize) -> String) -> Epoch {
    let mut epoch = Epoch(0);
    for i in 0..n {
        epoch = b
            .publish_blocking("ns", topic, body(i))
            .expect("publish")
            .epoch;
    }
    epoch
}

/// The segment files of a data dir.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).expect("data dir") {
        let shard = shard.expect("entry").path();
        if !shard.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&shard).expect("shard dir") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|e| e == "seg") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn acknowledged_messages_survive_a_restart_with_their_epoch() {
    let dir = DataDir::new("restart");
    let b = start(&dir, 2);
    let mut acks = Vec::new();
    for i in 0..50 {
        let p = b
            .publish_blocking("ns", "t", format!("m{i}"))
            .expect("publish");
        assert_eq!(
            p.durability,
            Durability::Synced,
            "acknowledged after fdatasync"
        );
        acks.push(p);
    }
    let epoch = acks[0].epoch;
    assert!(acks.iter().all(|p| p.epoch == epoch));
    assert_eq!(acks.last().map(|p| p.seq), Some(Seq(50)));
    let s = total(&b);
    assert_eq!(s.storage_records, 50);
    assert!(s.storage_batches >= 1 && s.storage_batches <= 50);
    b.shutdown();
    drop(b);

    let b = start(&dir, 2);
    assert_eq!(total(&b).storage_recovered, 50);
    // Resume from the first sequence: every message, same epoch, no discontinuity.
    let mut sub = from_start(&b, "t", epoch);
    let got = items(&mut sub, 50);
    for (i, (e, s, p)) in got.iter().enumerate() {
        assert_eq!((*e, *s), (epoch, Seq(i as u64 + 1)));
        assert_eq!(p, format!("m{i}").as_bytes());
    }
    // The topic goes on where it was.
    let p = b.publish_blocking("ns", "t", "after").expect("publish");
    assert_eq!((p.epoch, p.seq), (epoch, Seq(51)));
    assert_eq!(items(&mut sub, 1)[0].1, Seq(51));
    drop(sub);
    b.shutdown();
}

#[test]
fn many_publishers_share_a_sync_and_every_one_is_answered() {
    let dir = DataDir::new("group");
    let b = start(&dir, 1);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let p = b
                        .publish_blocking("ns", &format!("t{}", t % 3), format!("{t}-{i}"))
                        .expect("publish");
                    assert_eq!(p.durability, Durability::Synced);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("publisher");
    }
    let s = total(&b);
    assert_eq!(s.storage_records, 800);
    assert!(
        s.storage_batches < 800,
        "group commit: {} batches for 800 records from 8 publishers",
        s.storage_batches
    );
    b.shutdown();
    drop(b);
    let b = start(&dir, 1);
    assert_eq!(total(&b).storage_recovered, 800);
    b.shutdown();
}

#[test]
fn a_flipped_bit_costs_that_message_alone_and_the_topic_keeps_its_epoch() {
    let dir = DataDir::new("flip");
    let b = start(&dir, 1);
    let epoch = publish_n(&b, "flip", 20, |i| format!("payload-{i:04}"));
    let other_epoch = b
        .publish_blocking("ns", "other", "fine")
        .expect("publish")
        .epoch;
    b.shutdown();
    drop(b);

    // Flip one bit inside the fifth message's payload.
    let seg = segments(&dir.0).pop().expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let at = bytes
        .windows(12)
        .position(|w| w == b"payload-0004")
        .expect("the record");
    bytes[at + 3] ^= 0x10;
    std::fs::write(&seg, &bytes).expect("write");

    // Twice: the damage stays on disk, and costs the same after every restart.
    for round in 0..2 {
        let b = start(&dir, 1);
        let s = total(&b);
        assert_eq!(s.storage_damaged, 1, "the damage is counted");
        assert_eq!(s.storage_lost_messages, 1, "one message lost");
        assert_eq!(s.storage_renewed_topics, 0, "no topic starts over");
        let mut sub = from_start(&b, "flip", epoch);
        let before = items(&mut sub, 4);
        let want = |i: u64| (epoch, Seq(i), format!("payload-{:04}", i - 1).into_bytes());
        assert_eq!(before, (1..=4).map(want).collect::<Vec<_>>());
        match sub.next_timeout(WAIT) {
            Ok(Some(Event::Discontinuity {
                last_seq,
                new_seq,
                new_epoch,
            })) => assert_eq!(
                (last_seq, new_seq, new_epoch),
                (Seq(4), Seq(6), epoch),
                "exactly seq 5, same epoch"
            ),
            other => panic!("expected a discontinuity, got {other:?}"),
        }
        let after = items(&mut sub, 15 + round);
        let mut expect: Vec<_> = (6..=20).map(want).collect();
        if round == 1 {
            expect.push((epoch, Seq(21), b"after".to_vec()));
        }
        assert_eq!(after, expect);
        // The topic goes on in its epoch.
        let p = b.publish_blocking("ns", "flip", "after").expect("publish");
        if round == 0 {
            assert_eq!((p.epoch, p.seq), (epoch, Seq(21)));
        }
        // The undamaged topic keeps its epoch and message.
        let mut other = from_start(&b, "other", other_epoch);
        let got = items(&mut other, 1);
        assert_eq!(got[0].2, b"fine");
        drop((sub, other));
        b.shutdown();
    }
}

#[test]
fn a_torn_tail_is_cut_and_what_came_before_it_is_served() {
    let dir = DataDir::new("torn");
    let b = start(&dir, 1);
    let epoch = publish_n(&b, "torn", 10, |i| format!("m{i}"));
    b.shutdown();
    drop(b);

    // Half a record after the valid data: what a crash in the middle of a write leaves.
    let seg = segments(&dir.0).pop().expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let end = end.next_multiple_of(8);
    let mut rec = Vec::new();
    fanfare_core::log::Record {
        kind: fanfare_core::log::Kind::Message,
        topic: b"ns/torn".to_vec(),
        epoch: epoch.0,
        seq: 11,
        timestamp_us: 1,
        publisher: Vec::new(),
        key: Vec::new(),
        payload: vec![7; 300],
    }
    .encode(&mut rec)
    .expect("encode");
    bytes.resize(end.max(bytes.len()), 0);
    bytes.truncate(end);
    bytes.extend_from_slice(&rec[..rec.len() / 2]);
    std::fs::write(&seg, &bytes).expect("write");

    let b = start(&dir, 1);
    let s = total(&b);
    assert!(s.storage_cut_bytes > 0, "the tail is cut");
    assert_eq!(s.storage_damaged, 0, "a torn tail is not damage");
    let mut sub = from_start(&b, "torn", epoch);
    let got = items(&mut sub, 10);
    assert_eq!(got.last().map(|g| (g.0, g.1)), Some((epoch, Seq(10))));
    let p = b.publish_blocking("ns", "torn", "next").expect("publish");
    assert_eq!((p.epoch, p.seq), (epoch, Seq(11)));
    drop(sub);
    b.shutdown();
    drop(b);
    // The cut stays cut after another restart.
    let b = start(&dir, 1);
    assert_eq!(total(&b).storage_cut_bytes, 0);
    assert_eq!(total(&b).storage_recovered, 11);
    b.shutdown();
}

#[test]
fn retention_deletes_whole_old_segments() {
    let dir = DataDir::new("retention");
    let cfg = config(&dir, 1, 1000, |st| {
        st.segment_bytes = 1 << 20;
        st.retention_bytes = 2 << 20;
    });
    let b = Broker::builder().config(cfg).start().expect("start");
    let payload = vec![b'x'; 64 << 10];
    for _ in 0..80 {
        b.publish_blocking("ns", "big", payload.clone())
            .expect("publish");
    }
    // 5 MiB written into 1 MiB segments with 2 MiB retained: the sweep (once a second)
    // deletes the oldest.
    eventually("a segment deleted", WAIT, || {
        total(&b).storage_segments_deleted > 0
    });
    let s = total(&b);
    assert!(s.storage_bytes <= 3 << 20, "{} bytes kept", s.storage_bytes);
    // The files go right after (the shard's storage task deletes them).
    eventually("the files on disk to match the segments kept", WAIT, || {
        segments(&dir.0).len() as u64 == s.storage_segments
    });
    b.shutdown();
}

#[test]
fn a_data_dir_refuses_another_shard_count() {
    let dir = DataDir::new("layout");
    let b = start(&dir, 2);
    b.publish_blocking("ns", "t", "x").expect("publish");
    b.shutdown();
    drop(b);
    let err = Broker::builder()
        .shards(1)
        .data_dir(&dir.0)
        .start()
        .err()
        .expect("refused");
    assert!(err.to_string().contains("shards = 2"), "{err}");
}

#[test]
fn a_data_dir_takes_one_broker_at_a_time() {
    let dir = DataDir::new("lock");
    let b = start(&dir, 1);
    b.publish_blocking("ns", "t", "x").expect("publish");
    // A second broker on the same dir while the first runs: refused, saying by whom.
    let err = Broker::builder()
        .shards(1)
        .data_dir(&dir.0)
        .start()
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("in use by another fanfare process"), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    // The first one goes on, and once it is gone the dir is free again, twice.
    b.publish_blocking("ns", "t", "y").expect("publish");
    b.shutdown();
    drop(b);
    for round in 0..2 {
        let b = start(&dir, 1);
        let p = b.publish_blocking("ns", "t", "z").expect("publish");
        assert_eq!(p.seq, Seq(3 + round), "the log goes on");
        b.shutdown();
    }
}

#[test]
fn without_a_data_dir_acknowledgements_say_memory() {
    let b = Broker::builder().shards(1).start().expect("start");
    let p = b.publish_blocking("ns", "t", "x").expect("publish");
    assert_eq!(p.durability, Durability::Memory);
    assert!(!matches!(
        b.publish_blocking("ns", "t", vec![0; 2 << 20]),
        Ok(_) | Err(PublishError::StorageUnavailable)
    ));
    b.shutdown();
}

#[test]
fn a_subscriber_behind_the_memory_history_catches_up_from_disk() {
    let dir = DataDir::new("catchup");
    // Memory holds the last 16; the disk everything.
    let cfg = config(&dir, 1, 16, |_| {});
    let b = Broker::builder()
        .config(cfg.clone())
        .start()
        .expect("start");
    const N: u64 = 2500; // more than two pages of DISK_PAGE_MESSAGES
    let mut epoch = Epoch(0);
    for i in 0..N {
        epoch = b
            .publish_blocking("ns", "deep", format!("m{i}"))
            .expect("publish")
            .epoch;
    }
    let check = |b: &Broker| {
        let mut sub = from_start(b, "deep", epoch);
        let got = items(&mut sub, N as usize);
        for (i, (e, s, p)) in got.iter().enumerate() {
            assert_eq!((*e, *s), (epoch, Seq(i as u64 + 1)), "in order, no gap");
            assert_eq!(p, format!("m{i}").as_bytes());
        }
        // Then live, in order after the catch-up.
        let p = b.publish_blocking("ns", "deep", "live").expect("publish");
        let live = items(&mut sub, 1);
        assert_eq!((live[0].1, &live[0].2[..]), (p.seq, &b"live"[..]));
    };
    check(&b);
    let s = total(&b);
    assert!(s.storage_reads >= 3, "{} pages read", s.storage_reads);
    assert!(s.storage_read_messages >= N - 16);
    assert_eq!(s.discontinuities, 0);
    b.shutdown();
    drop(b);
    // The same after a restart (the index is rebuilt from the log).
    let b = Broker::builder().config(cfg).start().expect("start");
    let mut sub = from_start(&b, "deep", epoch);
    let got = items(&mut sub, N as usize + 1);
    assert_eq!(got.last().map(|g| g.1), Some(Seq(N + 1)));
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, g)| g.1 == Seq(i as u64 + 1)));
    drop(sub);
    b.shutdown();
}

/// Forwards items (seq) and discontinuities to the test thread, from a shard's own thread.
struct Forward(std::sync::mpsc::Sender<Result<u64, String>>);

impl fanfare_core::Sink for Forward {
    fn offer(&self, _sub: fanfare_core::SubId, o: fanfare_core::Offer<'_>) -> fanfare_core::Accept {
        match o {
            fanfare_core::Offer::Item(d) => {
                let _ = self.0.send(Ok(d.message.seq.0));
            }
            fanfare_core::Offer::Discontinuity { .. } | fanfare_core::Offer::Closed(_) => {
                let _ = self.0.send(Err(format!("{o:?}")));
            }
            _ => {}
        }
        fanfare_core::Accept::Queued
    }
}

#[test]
fn a_subscriber_on_another_shard_catches_up_from_the_owners_disk() {
    let dir = DataDir::new("catchup-mesh");
    let cfg = config(&dir, 2, 8, |_| {});
    let b = Broker::builder().config(cfg).start().expect("start");
    let owner = b.owner_shard("ns", "far").expect("owner");
    let epoch = publish_n(&b, "far", 1500, |i| format!("m{i}"));
    let (tx, rx) = std::sync::mpsc::channel();
    b.run_on(1 - owner, move |h| {
        let key = h.topic_key("ns", "far").expect("key");
        let at = Start::At {
            epoch: epoch.0,
            seq: 1,
        };
        h.subscribe(key, at, std::rc::Rc::new(Forward(tx)))
            .expect("subscribe");
    })
    .expect("run on the other shard");
    for want in 1..=1500u64 {
        match rx.recv_timeout(WAIT) {
            Ok(Ok(seq)) => assert_eq!(seq, want, "in order, no gap"),
            other => panic!("at {want}: {other:?}"),
        }
    }
    assert!(total(&b).storage_reads >= 2);
    b.shutdown();
}

#[test]
fn fsync_never_acknowledges_written_and_still_recovers_after_a_clean_stop() {
    let dir = DataDir::new("never");
    let cfg = config(&dir, 1, 1000, |st| st.fsync = fanfare_core::Fsync::Never);
    let b = Broker::builder()
        .config(cfg.clone())
        .start()
        .expect("start");
    let p = b.publish_blocking("ns", "t", "w").expect("publish");
    assert_eq!(
        p.durability,
        Durability::Written,
        "the ack says it was not synced"
    );
    b.shutdown();
    drop(b);
    let b = Broker::builder().config(cfg).start().expect("start");
    assert_eq!(total(&b).storage_recovered, 1);
    b.shutdown();
}

/// With `fsync = "never"`, a machine restart under a running broker (a power loss: here, the
/// lock file made to say the last broker was running on another boot) gives every topic a new
/// epoch, so subscribers are told of whatever unsynced acknowledged messages were lost; a
/// process crash on the same boot, a clean stop, or `fsync = "always"` cost nothing.
#[test]
fn fsync_never_after_a_machine_restart_under_the_broker_renews_every_topic() {
    let dir = DataDir::new("reboot");
    let lock = dir.0.join("fanfare.lock");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let run = |fsync, state: &str, boot: &str| {
        // What the lock file holds when the last broker ran: `state` on `boot`.
        if !state.is_empty() {
            std::fs::write(&lock, format!("pid=1 boot={boot} state={state}\n")).expect("write");
        }
        let cfg = config(&dir, 1, 1000, |st| st.fsync = fsync);
        let b = Broker::builder().config(cfg).start().expect("start");
        let p = b.publish_blocking("ns", "t", "m").expect("publish");
        let renewed = total(&b).storage_renewed_topics;
        b.shutdown();
        (p.epoch, renewed)
    };
    let never = fanfare_core::Fsync::Never;
    let (e1, _) = run(never, "", "");
    let text = std::fs::read_to_string(&lock).expect("the lock file");
    assert!(
        text.contains("state=clean"),
        "a clean stop is recorded: {text}"
    );
    // A clean stop, then a machine restart: nothing lost.
    let (e2, renewed) = run(never, "clean", "another-boot");
    assert_eq!((e2, renewed), (e1, 0));
    // A process crash (kill -9) on this boot: O_DIRECT writes survive it.
    let (e3, renewed) = run(never, "running", &boot);
    assert_eq!((e3, renewed), (e1, 0));
    // The machine restarted while it ran: every topic in a new epoch, told.
    let (e4, renewed) = run(never, "running", "another-boot");
    assert!(e4 > e1, "a new epoch: {e4:?} after {e1:?}");
    assert_eq!(renewed, 1);
    // With fsync = always every acknowledged message was synced: nothing to renew.
    let (e5, renewed) = run(fanfare_core::Fsync::Always, "running", "another-boot");
    assert_eq!((e5, renewed), (e4, 0));
}

#[test]
fn a_topic_keeps_its_last_messages_and_segments_nobody_keeps_are_deleted() {
    let dir = DataDir::new("topic-retention");
    let cfg = config(&dir, 1, 4, |st| {
        st.segment_bytes = 1 << 20;
        st.topic_retention_messages = 20;
    });
    let b = Broker::builder().config(cfg).start().expect("start");
    let payload = vec![b'x'; 64 << 10]; // 16 per 1 MiB segment
    let mut epoch = Epoch(0);
    for _ in 0..100 {
        epoch = b
            .publish_blocking("ns", "kept", payload.clone())
            .expect("publish")
            .epoch;
    }
    // The topic keeps its last 20 (messages 81..=100, in the last two or three segments):
    // every older segment goes at the next sweep.
    eventually("old segments to go", WAIT, || {
        total(&b).storage_segments <= 3
    });
    let mut sub = from_start(&b, "kept", epoch);
    match sub.next_timeout(WAIT) {
        Ok(Some(Event::Discontinuity {
            new_seq, new_epoch, ..
        })) => {
            assert_eq!(
                (new_epoch, new_seq),
                (epoch, Seq(81)),
                "told: 1..=80 are gone"
            )
        }
        other => panic!("expected a discontinuity, got {other:?}"),
    }
    let got = items(&mut sub, 20);
    assert_eq!(got.first().map(|g| g.1), Some(Seq(81)));
    assert_eq!(got.last().map(|g| g.1), Some(Seq(100)));
    drop(sub);
    b.shutdown();
}

#[test]
fn a_repeat_while_the_first_waits_for_the_disk_gets_the_same_answer() {
    let dir = DataDir::new("idem");
    let b = start(&dir, 1);
    const KEYS: usize = 50;
    const TRIES: usize = 6;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(TRIES));
    let threads: Vec<_> = (0..TRIES)
        .map(|_| {
            let (b, barrier) = (b.clone(), barrier.clone());
            std::thread::spawn(move || {
                (0..KEYS)
                    .map(|k| {
                        barrier.wait(); // every try of key k at once
                        let meta = fanfare_core::PublishMeta {
                            publisher: Some("p".into()),
                            idempotency_key: Some(format!("k{k}").into()),
                        };
                        let p = futures_lite::future::block_on(b.publish_with(
                            "ns",
                            "idem",
                            format!("m{k}"),
                            meta,
                        ))
                        .expect("publish");
                        (p.epoch, p.seq)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<Vec<(Epoch, Seq)>> = threads
        .into_iter()
        .map(|t| t.join().expect("publisher"))
        .collect();
    for k in 0..KEYS {
        let first = answers[0][k];
        assert!(
            answers.iter().all(|a| a[k] == first),
            "key {k}: every try gets the one position: {:?}",
            answers.iter().map(|a| a[k]).collect::<Vec<_>>()
        );
    }
    let s = total(&b);
    assert_eq!(s.storage_records, KEYS as u64, "one message stored per key");
    assert_eq!(s.idempotent_repeats, (KEYS * (TRIES - 1)) as u64);
    b.shutdown();
}

#[test]
fn a_truncated_segment_serves_what_is_left_and_keeps_its_epoch() {
    let dir = DataDir::new("truncated");
    let b = start(&dir, 1);
    let epoch = publish_n(&b, "cut", 10, |i| format!("message-{i}"));
    b.shutdown();
    drop(b);
    // Cut the file in the middle of the last message's record.
    let seg = segments(&dir.0).pop().expect("a segment");
    let bytes = std::fs::read(&seg).expect("read");
    let at = bytes
        .windows(9)
        .rposition(|w| w == b"message-9")
        .expect("the last record");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(at as u64 + 4))
        .expect("truncate");

    let b = start(&dir, 1);
    let s = total(&b);
    assert!(s.storage_cut_bytes > 0, "the torn record is cut");
    assert_eq!(s.storage_recovered, 9);
    let mut sub = from_start(&b, "cut", epoch);
    let got = items(&mut sub, 9);
    assert_eq!(got.last().map(|g| (g.0, g.1)), Some((epoch, Seq(9))));
    // Appends go on after what is left, in the same epoch.
    let p = b.publish_blocking("ns", "cut", "again").expect("publish");
    assert_eq!((p.epoch, p.seq), (epoch, Seq(10)));
    drop(sub);
    b.shutdown();
}
