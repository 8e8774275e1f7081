//! What the machine charges for waking a thread on another core: the floor under any
//! cross-shard round trip (`engine`'s `cross_shard/publish_round_trip`), measured without
//! Fanfare or glommio. Two threads pass a turn back and forth through one atomic:
//!
//! - `park`: the waiting thread sleeps (futex) and is woken by the other (`Thread::unpark`),
//!   as an executor parked in the kernel is woken by a peer;
//! - `spin`: both threads busy-wait on the atomic, as two executors that never park would;
//! - `glommio_channel`: two glommio executors pass a `u64` back and forth through a pair of
//!   glommio shared channels, the mechanism under Fanfare's shard mesh (nothing of Fanfare's
//!   own in between); `glommio_channel_spin1ms` with both executors spinning 1 ms before
//!   they park.
//!
//! One round trip is two wake-ups (there and back).

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Waits until `turn` reads `want`, sleeping between looks unless `spin`.
fn wait_for(turn: &AtomicU64, want: u64, spin: bool) {
    while turn.load(Ordering::Acquire) != want {
        if spin {
            spin_loop();
        } else {
            thread::park();
        }
    }
}

/// Time for `iters` round trips between this thread and a second one.
fn round_trips(iters: u64, spin: bool) -> Duration {
    let turn = Arc::new(AtomicU64::new(0));
    let main = thread::current();
    let theirs = turn.clone();
    let peer = thread::spawn(move || {
        for i in 0..iters {
            wait_for(&theirs, 2 * i + 1, spin);
            theirs.store(2 * i + 2, Ordering::Release);
            main.unpark();
        }
    });
    let peer_thread = peer.thread().clone();
    let t0 = Instant::now();
    for i in 0..iters {
        turn.store(2 * i + 1, Ordering::Release);
        peer_thread.unpark();
        wait_for(&turn, 2 * i + 2, spin);
    }
    let took = t0.elapsed();
    peer.join().expect("the peer thread finishes");
    took
}

/// Time for `iters` round trips between two glommio executors through shared channels; with
/// `spin`, each executor spins that long before it parks (glommio's `spin_before_park`).
fn glommio_round_trips(iters: u64, spin: Option<Duration>) -> Duration {
    use glommio::channels::shared_channel;
    use glommio::{LocalExecutorBuilder, Placement};
    let (ping_tx, ping_rx) = shared_channel::new_bounded::<u64>(64);
    let (pong_tx, pong_rx) = shared_channel::new_bounded::<u64>(64);
    let builder = || {
        let b = LocalExecutorBuilder::new(Placement::Unbound);
        match spin {
            Some(d) => b.spin_before_park(d),
            None => b,
        }
    };
    let peer = builder()
        .spawn(move || async move {
            let rx = ping_rx.connect().await;
            let tx = pong_tx.connect().await;
            while let Some(i) = rx.recv().await {
                if tx.send(i).await.is_err() {
                    break;
                }
            }
        })
        .expect("the peer executor starts");
    let here = builder()
        .spawn(move || async move {
            let tx = ping_tx.connect().await;
            let rx = pong_rx.connect().await;
            let t0 = Instant::now();
            for i in 0..iters {
                tx.send(i).await.expect("the peer receives");
                assert_eq!(rx.recv().await, Some(i));
            }
            t0.elapsed()
        })
        .expect("the timing executor starts");
    let took = here.join().expect("the timing executor finishes");
    peer.join().expect("the peer executor finishes");
    took
}

fn wakeup(c: &mut Criterion) {
    let mut g = c.benchmark_group("platform_wakeup_round_trip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("park", |b| b.iter_custom(|iters| round_trips(iters, false)));
    g.bench_function("spin", |b| b.iter_custom(|iters| round_trips(iters, true)));
    g.bench_function("glommio_channel", |b| {
        b.iter_custom(|iters| glommio_round_trips(iters, None))
    });
    g.bench_function("glommio_channel_spin1ms", |b| {
        b.iter_custom(|iters| glommio_round_trips(iters, Some(Duration::from_millis(1))))
    });
    g.finish();
}

criterion_group!(benches, wakeup);
criterion_main!(benches);
