//! The engine end to end: real shards on real executors (unpinned, so tests run side by side).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use fanfare_core::{
    Accept, Broker, CloseReason, Epoch, Event, Offer, PublishError, Seq, Sink, Start, SubId,
    SubscribeError,
};

#[path = "../../tests/common/eventually.rs"]
mod eventually;
use eventually::eventually;

const WAIT: Duration = Duration::from_secs(10);

fn broker(shards: usize) -> Broker {
    Broker::builder()
        .shards(shards)
        .start()
        .expect("broker starts")
}

fn item(ev: Option<Event>) -> (Epoch, Seq, Bytes) {
    match ev {
        Some(Event::Item(m)) => (m.epoch, m.seq, m.payload),
        other => panic!("expected an item, got {other:?}"),
    }
}

/// What a cross-shard test sink forwards: (topic index, event as text).
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Subscribed(u64),
    Item(u64, Bytes),
    Disc(u64, u64),
    Closed,
}

/// A sink on a non-owner shard that forwards to the test thread.
struct ChanSink {
    tag: usize,
    tx: mpsc::Sender<(usize, Seen)>,
}

impl Sink for ChanSink {
    fn offer(&self, _sub: SubId, o: Offer<'_>) -> Accept {
        let seen = match o {
            Offer::Subscribed { next_seq, .. } => Seen::Subscribed(next_seq.0),
            Offer::Item(d) => Seen::Item(d.message.seq.0, d.message.payload.clone()),
            Offer::Discontinuity {
                last_seq, new_seq, ..
            } => Seen::Disc(last_seq.0, new_seq.0),
            Offer::Closed(_) => Seen::Closed,
            Offer::Heartbeat { .. } => return Accept::Queued,
            _ => return Accept::Queued,
        };
        let _ = self.tx.send((self.tag, seen));
        Accept::Queued
    }
}

#[test]
fn every_subscriber_sees_every_message_once_in_order() {
    const SHARDS: usize = 4;
    const TOPICS: usize = 12;
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 150;
    let b = broker(SHARDS);
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("t{i}")).collect();
    let owners: Vec<usize> = topics
        .iter()
        .map(|t| b.owner_shard("ns", t).unwrap())
        .collect();
    let mut distinct = owners.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 3,
        "topics should spread over the shards: {owners:?}"
    );

    // Library subscribers (on the owner shard) ...
    let mut lib_subs: Vec<_> = topics
        .iter()
        .map(|t| b.subscribe_blocking("ns", t, Start::Latest).unwrap())
        .collect();
    // ... and a subscriber on every shard for every topic, so most go through the mesh.
    let (tx, rx) = mpsc::channel();
    for shard in 0..SHARDS {
        for (ti, t) in topics.iter().enumerate() {
            let (tx, t) = (tx.clone(), t.clone());
            let tag = shard * TOPICS + ti;
            b.run_on(shard, move |h| {
                let key = h.topic_key("ns", &t).unwrap();
                h.subscribe(key, Start::Latest, Rc::new(ChanSink { tag, tx }))
                    .unwrap();
            })
            .unwrap();
        }
    }
    let mut streams: HashMap<usize, Vec<Seen>> = HashMap::new();
    while streams.values().filter(|v| !v.is_empty()).count() < SHARDS * TOPICS {
        let (tag, seen) = rx
            .recv_timeout(WAIT)
            .expect("every mesh subscriber is confirmed");
        streams.entry(tag).or_default().push(seen);
    }

    std::thread::scope(|s| {
        for p in 0..PUBLISHERS {
            let (b, topics) = (b.clone(), &topics);
            s.spawn(move || {
                for i in 0..PER_PUBLISHER {
                    let t = &topics[(p + i) % TOPICS];
                    b.publish_blocking("ns", t, format!("{p}:{i}")).unwrap();
                }
            });
        }
    });
    let per_topic: Vec<usize> = (0..TOPICS)
        .map(|t| {
            (0..PUBLISHERS)
                .map(|p| (0..PER_PUBLISHER).filter(|i| (p + i) % TOPICS == t).count())
                .sum()
        })
        .collect();

    // Library subscribers: consecutive sequences from 1, each publisher's order kept.
    for (ti, sub) in lib_subs.iter_mut().enumerate() {
        let mut last_i = [None::<usize>; PUBLISHERS];
        for n in 1..=per_topic[ti] {
            let (_, seq, payload) = item(sub.next_timeout(WAIT).unwrap());
            assert_eq!(seq, Seq(n as u64), "topic {ti}");
            let text = std::str::from_utf8(&payload).unwrap();
            let (p, i) = text.split_once(':').unwrap();
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            assert!(
                last_i[p].is_none_or(|l| l < i),
                "publisher {p} reordered on topic {ti}"
            );
            last_i[p] = Some(i);
        }
        assert_eq!(
            sub.next_timeout(Duration::from_millis(50)),
            Err(()),
            "nothing more on topic {ti}"
        );
    }
    // Mesh subscribers: the same.
    let total: usize = per_topic.iter().sum::<usize>() * SHARDS;
    let mut got = 0;
    while got < total {
        let (tag, seen) = rx
            .recv_timeout(WAIT)
            .expect("all items reach the mesh subscribers");
        streams.entry(tag).or_default().push(seen);
        got += 1;
    }
    for (tag, evs) in &streams {
        let ti = tag % TOPICS;
        assert_eq!(evs[0], Seen::Subscribed(1), "sub {tag}");
        let seqs: Vec<u64> = evs[1..]
            .iter()
            .map(|e| match e {
                Seen::Item(s, _) => *s,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            seqs,
            (1..=per_topic[ti] as u64).collect::<Vec<_>>(),
            "sub {tag}"
        );
    }
    let total_stats = b.stats_total();
    assert_eq!(total_stats.publishes as usize, PUBLISHERS * PER_PUBLISHER);
    assert!(total_stats.mesh_batches > 0);
    b.shutdown();
}

#[test]
fn resume_inside_history_is_gapless() {
    let b = broker(2);
    let mut epoch = Epoch(0);
    for i in 1..=10u64 {
        let p = b.publish_blocking("ns", "resume", format!("m{i}")).unwrap();
        assert_eq!(p.seq, Seq(i));
        epoch = p.epoch;
    }
    let mut sub = b
        .subscribe_blocking(
            "ns",
            "resume",
            Start::At {
                epoch: epoch.0,
                seq: 4,
            },
        )
        .unwrap();
    assert_eq!(sub.next_seq(), Seq(4));
    b.publish_blocking("ns", "resume", "m11").unwrap();
    for i in 4..=11u64 {
        let (e, seq, payload) = item(sub.next_timeout(WAIT).unwrap());
        assert_eq!((e, seq), (epoch, Seq(i)));
        assert_eq!(payload, format!("m{i}"));
    }
    // At the head: nothing replayed, live continues.
    let mut head = b
        .subscribe_blocking(
            "ns",
            "resume",
            Start::At {
                epoch: epoch.0,
                seq: 12,
            },
        )
        .unwrap();
    b.publish_blocking("ns", "resume", "m12").unwrap();
    assert_eq!(item(head.next_timeout(WAIT).unwrap()).1, Seq(12));
    // Last N.
    let mut last = b
        .subscribe_blocking("ns", "resume", Start::LastN(3))
        .unwrap();
    for i in 10..=12u64 {
        assert_eq!(item(last.next_timeout(WAIT).unwrap()).1, Seq(i));
    }
    // Ahead of the head is refused.
    let err = b
        .subscribe_blocking(
            "ns",
            "resume",
            Start::At {
                epoch: epoch.0,
                seq: 99,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, SubscribeError::InvalidResume { .. }),
        "{err:?}"
    );
    b.shutdown();
}

#[test]
fn resume_outside_history_gives_one_discontinuity() {
    let b = Broker::builder()
        .shards(2)
        .history(5, 1 << 20)
        .start()
        .unwrap();
    let mut epoch = Epoch(0);
    for _ in 0..20 {
        epoch = b.publish_blocking("ns", "old", "x").unwrap().epoch;
    }
    let mut sub = b
        .subscribe_blocking(
            "ns",
            "old",
            Start::At {
                epoch: epoch.0,
                seq: 3,
            },
        )
        .unwrap();
    assert_eq!(sub.next_seq(), Seq(16));
    assert_eq!(
        sub.next_timeout(WAIT).unwrap(),
        Some(Event::Discontinuity {
            last_seq: Seq(2),
            new_seq: Seq(16),
            new_epoch: epoch
        })
    );
    for i in 16..=20 {
        assert_eq!(item(sub.next_timeout(WAIT).unwrap()).1, Seq(i));
    }
    b.publish_blocking("ns", "old", "live").unwrap();
    assert_eq!(item(sub.next_timeout(WAIT).unwrap()).1, Seq(21));
    // Exactly one.
    assert_eq!(sub.next_timeout(Duration::from_millis(50)), Err(()));
    assert_eq!(b.stats_total().discontinuities, 1);
    b.shutdown();
}

#[test]
fn epoch_mismatch_gives_a_discontinuity() {
    let b = broker(2);
    let p = b.publish_blocking("ns", "ep", "a").unwrap();
    b.publish_blocking("ns", "ep", "b").unwrap();
    let stale = Epoch(p.epoch.0 - 1);
    let mut sub = b
        .subscribe_blocking(
            "ns",
            "ep",
            Start::At {
                epoch: stale.0,
                seq: 7,
            },
        )
        .unwrap();
    assert_eq!(
        sub.next_timeout(WAIT).unwrap(),
        Some(Event::Discontinuity {
            last_seq: Seq(6),
            new_seq: Seq(1),
            new_epoch: p.epoch
        })
    );
    assert_eq!(item(sub.next_timeout(WAIT).unwrap()).1, Seq(1));
    assert_eq!(item(sub.next_timeout(WAIT).unwrap()).1, Seq(2));
    b.shutdown();
}

/// Publishes `n` messages while `stalled` reads nothing and `fast` reads everything; returns
/// what `stalled` sees when it finally drains.
fn stall_then_drain(history: usize, n: u64) -> (Vec<Event>, fanfare_core::StatsSnapshot, usize) {
    const QUEUE: usize = 4096;
    let b = Broker::builder()
        .shards(2)
        .history(history, 64 << 20)
        .subscriber_queue_bytes_max(QUEUE)
        .start()
        .unwrap();
    let mut stalled = b.subscribe_blocking("ns", "slow", Start::Latest).unwrap();
    let mut fast = b.subscribe_blocking("ns", "slow", Start::Latest).unwrap();
    // The fast subscriber reads everything as it comes. On a loaded machine it may itself
    // fall behind its small queue; then it must be caught up or told, like anyone else.
    let reader = std::thread::spawn(move || {
        let mut evs = Vec::new();
        loop {
            let e = fast.next_timeout(WAIT).unwrap().expect("open");
            let last = matches!(&e, Event::Item(m) if m.seq == Seq(n));
            evs.push(e);
            if last {
                return evs;
            }
        }
    });
    let payload = Bytes::from(vec![7u8; 100]);
    for _ in 0..n {
        b.publish_blocking("ns", "slow", payload.clone()).unwrap();
    }
    // Every publish returned while `stalled` read nothing: the topic never waited for it.
    let fast_events = reader.join().unwrap();
    check_stream(&fast_events, 1, n);
    let queued = stalled.queued_bytes();
    assert!(
        queued <= QUEUE,
        "queue bytes {queued} over the limit {QUEUE}"
    );
    let mut seen = Vec::new();
    loop {
        match stalled.next_timeout(Duration::from_millis(300)) {
            Ok(Some(e)) => {
                let done = matches!(&e, Event::Item(m) if m.seq == Seq(n));
                seen.push(e);
                if done {
                    break;
                }
            }
            other => panic!(
                "stalled subscriber stopped early: {other:?} after {} events",
                seen.len()
            ),
        }
    }
    let stats = b.stats_total();
    b.shutdown();
    (seen, stats, queued)
}

/// The events are items with consecutive sequences, except where a discontinuity bridges.
fn check_stream(evs: &[Event], first: u64, last: u64) -> usize {
    let mut expect = first;
    let mut discs = 0;
    for e in evs {
        match e {
            Event::Item(m) => {
                assert_eq!(m.seq.0, expect);
                expect += 1;
            }
            Event::Discontinuity {
                last_seq, new_seq, ..
            } => {
                assert_eq!(last_seq.0 + 1, expect);
                assert!(new_seq.0 > expect);
                expect = new_seq.0;
                discs += 1;
            }
            Event::Heartbeat { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(expect, last + 1);
    discs
}

#[test]
fn stalled_subscriber_catches_up_from_history() {
    let (evs, stats, _) = stall_then_drain(10_000, 2_000);
    assert_eq!(
        check_stream(&evs, 1, 2_000),
        0,
        "history covered the gap: no discontinuity"
    );
    assert!(stats.lagged >= 1 && stats.catchups >= 1, "{stats:?}");
}

#[test]
fn stalled_subscriber_gets_a_discontinuity_past_history() {
    let (evs, stats, _) = stall_then_drain(100, 2_000);
    assert!(check_stream(&evs, 1, 2_000) >= 1);
    assert!(stats.lagged >= 1 && stats.discontinuities >= 1, "{stats:?}");
}

#[test]
fn too_slow_subscriber_is_closed_with_a_reason() {
    let mut cfg = fanfare_core::Config::default();
    cfg.shards = 1;
    cfg.subscriber_queue_bytes_max = 1024;
    cfg.subscriber_lag_max = Duration::from_millis(100);
    let b = Broker::builder().config(cfg).start().unwrap();
    let mut sub = b.subscribe_blocking("ns", "t", Start::Latest).unwrap();
    for _ in 0..50 {
        b.publish_blocking("ns", "t", vec![0u8; 100]).unwrap();
    }
    // Read nothing (the subscriber stays behind) until the engine closes it.
    eventually("the engine to close the subscriber", WAIT, || {
        sub.close_reason().is_some()
    });
    while let Ok(Some(_)) = sub.next_timeout(Duration::from_millis(100)) {}
    assert!(
        matches!(sub.close_reason(), Some(CloseReason::TooSlow(_))),
        "{:?}",
        sub.close_reason()
    );
    assert_eq!(b.stats_total().closed_too_slow, 1);
    b.shutdown();
}

#[test]
fn heartbeats_on_quiet_subscriptions() {
    let b = Broker::builder()
        .shards(1)
        .heartbeat_interval(Duration::from_millis(40))
        .start()
        .unwrap();
    let p = b.publish_blocking("ns", "quiet", "x").unwrap();
    let mut sub = b.subscribe_blocking("ns", "quiet", Start::Latest).unwrap();
    assert_eq!(
        sub.next_timeout(WAIT).unwrap(),
        Some(Event::Heartbeat {
            epoch: p.epoch,
            next_seq: Seq(2)
        })
    );
    b.shutdown();
}

#[test]
fn errors_are_typed() {
    let b = Broker::builder().config({
        let mut c = fanfare_core::Config::default();
        c.shards = 1;
        c.topics_per_shard_max = 2;
        c.message_bytes_max = 10;
        c
    });
    let b = b.start().unwrap();
    assert!(matches!(
        b.publish_blocking("bad/ns", "t", "x"),
        Err(PublishError::InvalidName {
            field: "namespace",
            ..
        })
    ));
    assert!(matches!(
        b.publish_blocking("ns", "", "x"),
        Err(PublishError::InvalidName { field: "topic", .. })
    ));
    assert!(matches!(
        b.publish_blocking("ns", "t", vec![0u8; 11]),
        Err(PublishError::TooLarge { len: 11, max: 10 })
    ));
    b.publish_blocking("ns", "a", "x").unwrap();
    b.publish_blocking("ns", "b", "x").unwrap();
    assert_eq!(
        b.publish_blocking("ns", "c", "x"),
        Err(PublishError::TopicLimit { max: 2 })
    );
    assert!(matches!(
        b.subscribe_blocking("ns", "c", Start::Latest),
        Err(SubscribeError::TopicLimit { max: 2 })
    ));
    assert_eq!(b.stats_total().topic_limit_rejections, 2);
    b.shutdown();
    assert_eq!(
        b.publish_blocking("ns", "a", "x"),
        Err(PublishError::ShuttingDown)
    );
}

#[test]
fn shutdown_drains_queued_events_then_ends_streams() {
    let b = broker(2);
    let mut sub = b.subscribe_blocking("ns", "bye", Start::Latest).unwrap();
    for _ in 0..5 {
        b.publish_blocking("ns", "bye", "x").unwrap();
    }
    b.shutdown();
    for i in 1..=5 {
        assert_eq!(item(sub.next_timeout(WAIT).unwrap()).1, Seq(i));
    }
    assert_eq!(sub.next_timeout(WAIT), Ok(None));
    assert_eq!(sub.close_reason(), Some(CloseReason::ShuttingDown));
}

#[test]
fn dropping_a_subscription_unsubscribes() {
    let b = broker(1);
    let sub = b.subscribe_blocking("ns", "d", Start::Latest).unwrap();
    assert_eq!(b.stats_total().subscriptions, 1);
    drop(sub);
    eventually("the unsubscribe to arrive", WAIT, || {
        b.stats_total().subscriptions == 0
    });
    b.shutdown();
}

#[test]
fn works_from_tokio() {
    use futures_util::StreamExt;
    let b = broker(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sub = b.subscribe("ns", "tokio", Start::Latest).await.unwrap();
        let publisher = {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    b.publish("ns", "tokio", format!("{i}")).await.unwrap();
                }
            })
        };
        for i in 1..=100u64 {
            let ev = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
            assert_eq!(item(ev).1, Seq(i));
        }
        publisher.await.unwrap();
    });
    b.shutdown();
}

#[test]
fn idle_topics_expire_and_restart_in_a_new_epoch() {
    let mut cfg = fanfare_core::Config::default();
    cfg.shards = 1;
    cfg.history_age_max = Duration::from_millis(50);
    let b = Broker::builder().config(cfg).start().unwrap();
    let first = b.publish_blocking("ns", "idle", "x").unwrap();
    assert_eq!(first.seq, Seq(1));
    // The sweep runs every second.
    eventually("the idle topic to be dropped", WAIT, || {
        b.stats_total().topics_expired > 0
    });
    assert_eq!(b.stats_total().topics, 0);
    let again = b.publish_blocking("ns", "idle", "y").unwrap();
    assert_eq!(again.seq, Seq(1));
    assert!(
        again.epoch > first.epoch,
        "a restarted sequence gets a new, larger epoch"
    );
    // A topic with a subscriber is never dropped, whatever the age of its history: wait until
    // a sweep dropped a topic without one, published at the same time.
    let _sub = b.subscribe_blocking("ns", "kept", Start::Latest).unwrap();
    b.publish_blocking("ns", "kept", "z").unwrap();
    b.publish_blocking("ns", "unwatched", "z").unwrap();
    let expired = b.stats_total().topics_expired;
    eventually("a sweep to drop the unwatched topic", WAIT, || {
        b.stats_total().topics_expired > expired
    });
    let kept = b.publish_blocking("ns", "kept", "w").unwrap();
    assert_eq!(kept.seq, Seq(2));
    b.shutdown();
}

#[test]
fn acknowledged_before_shutdown_reaches_subscribers_on_every_shard() {
    const SHARDS: usize = 4;
    const TOPICS: usize = 16;
    for round in 0..5 {
        let b = broker(SHARDS);
        let (tx, rx) = mpsc::channel();
        for shard in 0..SHARDS {
            for ti in 0..TOPICS {
                let tx = tx.clone();
                b.run_on(shard, move |h| {
                    h.subscribe(
                        h.topic_key("ns", &format!("bye-{ti}")).unwrap(),
                        Start::Latest,
                        Rc::new(ChanSink {
                            tag: shard * TOPICS + ti,
                            tx,
                        }),
                    )
                    .unwrap();
                })
                .unwrap();
            }
        }
        drop(tx);
        let mut streams: HashMap<usize, Vec<Seen>> = HashMap::new();
        while streams.len() < SHARDS * TOPICS {
            let (tag, seen) = rx.recv_timeout(WAIT).expect("every subscriber confirmed");
            streams.entry(tag).or_default().push(seen);
        }
        for ti in 0..TOPICS {
            b.publish_blocking("ns", &format!("bye-{ti}"), "last words")
                .unwrap();
        }
        // Shut down right after the acks: the items are still crossing the mesh.
        b.shutdown();
        while let Ok((tag, seen)) = rx.recv_timeout(WAIT) {
            streams.entry(tag).or_default().push(seen);
        }
        for (tag, evs) in &streams {
            let item = evs.iter().position(|e| matches!(e, Seen::Item(..)));
            let closed = evs.iter().position(|e| *e == Seen::Closed);
            assert!(
                matches!((item, closed), (Some(i), Some(c)) if i < c),
                "round {round}, subscriber {tag}: an acknowledged message must arrive before \
                 the close: {evs:?}"
            );
        }
    }
}

/// A publish repeating an idempotency key (same publisher, same topic, within the window) is
/// answered with the original position and orders nothing; another publisher's same key is
/// another key; past the window or the count bound a key is forgotten.
#[test]
fn idempotency_keys_make_retries_safe() {
    use fanfare_core::PublishMeta;
    use std::sync::Arc;
    let mut cfg = fanfare_core::Config::default();
    cfg.shards = 2;
    cfg.idempotency_keys_max = 3;
    cfg.idempotency_window = Duration::from_millis(300);
    let b = Broker::builder().config(cfg).start().unwrap();
    let mut sub = b.subscribe_blocking("ns", "idem", Start::Latest).unwrap();
    let meta = |who: &str, key: &str| PublishMeta {
        publisher: Some(Arc::from(who)),
        idempotency_key: Some(Arc::from(key)),
    };
    let publish = |m: PublishMeta, body: &'static str| {
        futures_lite::future::block_on(b.publish_with("ns", "idem", body, m)).unwrap()
    };
    let first = publish(meta("alice", "k1"), "one");
    let again = publish(meta("alice", "k1"), "one, retried");
    assert_eq!(again, first, "the retry gets the original position");
    let bob = publish(meta("bob", "k1"), "bob's");
    assert_eq!(
        bob.seq,
        Seq(first.seq.0 + 1),
        "another publisher's key is another key"
    );
    // The subscriber sees each message once.
    for want in ["one", "bob's"] {
        match sub.next_timeout(WAIT) {
            Ok(Some(Event::Item(m))) => assert_eq!(m.payload, want),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        sub.next_timeout(Duration::from_millis(50)).is_err(),
        "no duplicate"
    );
    // Count bound: k1 is the oldest of alice's and bob's keys; three more push it out.
    for k in ["k2", "k3", "k4"] {
        publish(meta("alice", k), "filler");
    }
    let after_evict = publish(meta("alice", "k1"), "one, much later");
    assert_ne!(after_evict, first, "an evicted key orders a new message");
    // Window: a key older than the window is forgotten.
    let fresh = publish(meta("carol", "w"), "w");
    eventually("the key to expire", WAIT, || {
        publish(meta("carol", "w"), "w again") != fresh
    });
    assert!(b.stats_total().idempotent_repeats >= 1);
    assert!(b.stats_total().idempotency_keys_evicted >= 1);
    b.shutdown();
}

/// The library's presence: every subscription counts, entered ones are listed, and a
/// subscriber asking for member events sees joins and leaves.
#[test]
fn library_subscribers_have_presence() {
    use fanfare_core::{PresenceAction, PresenceOptions, PresenceQuery};
    use std::sync::Arc;
    let b = broker(2);
    let mut watcher = futures_lite::future::block_on(b.subscribe_with(
        "ns",
        "room",
        Start::Latest,
        PresenceOptions {
            member_events: true,
            ..Default::default()
        },
    ))
    .unwrap();
    let ada = futures_lite::future::block_on(b.subscribe_with(
        "ns",
        "room",
        Start::Latest,
        PresenceOptions {
            enter: Some((Arc::from("ada"), Bytes::from_static(b"hi"))),
            ..Default::default()
        },
    ))
    .unwrap();
    let joined = loop {
        match watcher.next_timeout(WAIT) {
            Ok(Some(Event::Presence(e))) if e.action == PresenceAction::Join => break e,
            Ok(Some(_)) => {}
            other => panic!("expected a join, got {other:?}"),
        }
    };
    let m = joined.member.unwrap();
    assert_eq!((&*m.client_id, &m.info[..]), ("ada", &b"hi"[..]));
    let q = PresenceQuery {
        members: true,
        after: 0,
        limit: 10,
    };
    let s = futures_lite::future::block_on(b.presence("ns", "room", q)).unwrap();
    assert_eq!((s.occupancy, s.members_total), (2, 1));
    assert_eq!(s.members[0].id, m.id);
    drop(ada);
    let left = loop {
        match watcher.next_timeout(WAIT) {
            Ok(Some(Event::Presence(e))) if e.action == PresenceAction::Leave => break e,
            Ok(Some(_)) => {}
            other => panic!("expected a leave, got {other:?}"),
        }
    };
    assert_eq!(left.member.unwrap().id, m.id);
    assert_eq!(
        futures_lite::future::block_on(b.presence("ns", "room", q))
            .unwrap()
            .occupancy,
        1
    );
    b.shutdown();
}
