//! Engine: placement, history append, the cross-shard hop, and in-process fan-out to N local
//! subscribers (the zero-copy delivery path, ns per message per subscriber).
use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanfare_core::history::History;
use fanfare_core::placement::shard_for;
use fanfare_core::{Accept, Broker, Epoch, Message, Offer, Seq, Sink, Start, SubId};

fn placement(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("chat/room-{i}")).collect();
    let mut g = c.benchmark_group("placement");
    g.throughput(Throughput::Elements(1));
    for shards in [2u16, 16, 64] {
        g.bench_with_input(BenchmarkId::new("shard_for", shards), &shards, |b, &n| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(shard_for(keys[i].as_bytes(), n))
            })
        });
    }
    g.finish();
}

fn history(c: &mut Criterion) {
    let mut g = c.benchmark_group("history");
    g.throughput(Throughput::Elements(1));
    let payload = Bytes::from(vec![0u8; 128]);
    g.bench_function("append_128B_full_ring", |b| {
        let mut h = History::new(1000, 1 << 20);
        let now = Instant::now();
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            h.push(now, Message::new(Epoch(1), Seq(seq), payload.clone(), None));
        })
    });
    g.finish();
}

/// A subscriber that only counts: isolates the engine's cost from any transport.
struct Counter(Rc<Cell<u64>>);
impl Sink for Counter {
    fn offer(&self, _: SubId, o: Offer<'_>) -> Accept {
        if let Offer::Item(d) = o {
            black_box(d.message.seq);
            self.0.set(self.0.get() + 1);
        }
        Accept::Queued
    }
}

/// Runs `iters` publishes on `from_shard` to a topic owned by `owner` with `subs` counting
/// subscribers on `owner`'s shard; returns the time the shard measured.
fn timed_on_shard(b: &Broker, from_shard: usize, topic: &'static str, iters: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    b.run_on(from_shard, move |h| {
        let h = h.clone();
        glommio::spawn_local(async move {
            let payload = Bytes::from(vec![0u8; 128]);
            let t0 = Instant::now();
            for _ in 0..iters {
                // A key per publish, as a connection builds one per decoded publish.
                let key = h.topic_key("bench", topic).expect("key");
                h.publish(key, payload.clone(), Default::default())
                    .await
                    .expect("publish");
            }
            let _ = tx.send(t0.elapsed());
        })
        .detach();
    })
    .expect("shard is up");
    rx.recv().expect("shard answers")
}

fn topic_owned_by(b: &Broker, shard: usize) -> &'static str {
    let name = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| b.owner_shard("bench", t).unwrap() == shard)
        .unwrap();
    Box::leak(name.into_boxed_str())
}

fn hop(c: &mut Criterion) {
    let b = Broker::builder().shards(2).start().expect("broker");
    let remote = topic_owned_by(&b, 1);
    let mut g = c.benchmark_group("cross_shard");
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish_round_trip", |bn| {
        bn.iter_custom(|iters| timed_on_shard(&b, 0, remote, iters))
    });
    let local = topic_owned_by(&b, 0);
    g.bench_function("publish_same_shard", |bn| {
        bn.iter_custom(|iters| timed_on_shard(&b, 0, local, iters))
    });
    b.shutdown();
    // The same hop when idle shards spin 200 us before parking (config `spin_before_park`).
    let mut cfg = fanfare_core::Config::default();
    cfg.shards = 2;
    cfg.spin_before_park = Some(Duration::from_micros(200));
    let b = Broker::builder().config(cfg).start().expect("broker");
    let remote = topic_owned_by(&b, 1);
    g.bench_function("publish_round_trip_spin200us", |bn| {
        bn.iter_custom(|iters| timed_on_shard(&b, 0, remote, iters))
    });
    g.finish();
    b.shutdown();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_local");
    g.sample_size(20);
    for n in [1u64, 100, 1_000, 10_000] {
        let b = Broker::builder().shards(1).start().expect("broker");
        let (tx, rx) = mpsc::channel();
        b.run_on(0, move |h| {
            let count = Rc::new(Cell::new(0u64));
            for _ in 0..n {
                h.subscribe(
                    h.topic_key("bench", "fan").expect("key"),
                    Start::Latest,
                    Rc::new(Counter(count.clone())),
                )
                .expect("subscribe");
            }
            let _ = tx.send(());
        })
        .expect("shard");
        rx.recv().expect("subscribed");
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("subscribers", n), &n, |bn, _| {
            bn.iter_custom(|iters| timed_on_shard(&b, 0, "fan", iters))
        });
        b.shutdown();
    }
    g.finish();
}

criterion_group!(benches, placement, history, hop, fanout);
criterion_main!(benches);
