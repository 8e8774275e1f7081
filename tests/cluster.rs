//! A cluster of real `fanfare` processes on 127.0.0.1 (three storage nodes and two routers):
//! the data path. Topics spread over the storage nodes, routers agree and share links, and
//! messages survive a storage node or a router killed with -9 and a storage node restarted on
//! its data dir. Each test starts its own cluster on ports picked by the OS and stops it; the
//! harness is tests/common/cluster.rs (membership, TLS and presence: tests/cluster_membership.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare::client::Client;
use fanfare::proto::{ServerMsg, Start};

mod common;
use common::eventually;
use eventually::eventually;
#[path = "common/cluster.rs"]
mod cluster;
use cluster::*;

#[test]
fn routers_agree_topics_spread_and_links_are_shared() {
    let c = Cluster::start();
    let (r1, r2) = (&c.routers[0], &c.routers[1]);
    let topics: Vec<String> = (0..60).map(|i| format!("topic-{i}")).collect();
    let mut subs: Vec<(String, Client, Client)> = topics
        .iter()
        .map(|t| {
            (
                t.clone(),
                subscribe(&r1.ws(), t, Start::Latest),
                subscribe(&r2.ws(), t, Start::Latest),
            )
        })
        .collect();
    // Publishers on both routers, alternating.
    let mut p1 = Client::connect(&r1.ws()).unwrap();
    let mut p2 = Client::connect(&r2.ws()).unwrap();
    let mut acked: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    for round in 0..4 {
        for t in &topics {
            let body = format!("{t}#{round}");
            let p = if round % 2 == 0 { &mut p1 } else { &mut p2 };
            let (e, s) = p.publish("t", t, Bytes::from(body.clone())).unwrap();
            acked.entry(t.clone()).or_default().push((e, s, body));
        }
    }
    for (t, a, b) in subs.iter_mut() {
        let (mut sa, mut sb) = (Seen::default(), Seen::default());
        read_items(a, &mut sa, 4);
        read_items(b, &mut sb, 4);
        assert_eq!(sa.items, acked[t], "{t}: r1's subscriber");
        assert_eq!(sb.items, acked[t], "{t}: r2's subscriber");
        assert!(sa.discontinuities.is_empty() && sb.discontinuities.is_empty());
    }
    // Placement: every topic on exactly one storage node, spread about evenly; routers own none.
    let owned: Vec<BTreeSet<String>> = c.storage.iter().map(Node::topics).collect();
    let all: BTreeSet<String> = owned.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 60, "{owned:?}");
    assert_eq!(owned.iter().map(BTreeSet::len).sum::<usize>(), 60);
    for (n, o) in c.storage.iter().zip(&owned) {
        assert!(o.len() >= 10, "{} owns only {} of 60 topics", n.id, o.len());
    }
    for r in &c.routers {
        assert!(r.topics().is_empty(), "router {} stores topics", r.id);
    }
    drop(subs);

    // Link reuse: 1,000 subscribers of one topic on r1 make one upstream subscription per r1
    // shard that has subscribers, and each message crosses each link once.
    let mut many: Vec<Client> = (0..1000)
        .map(|_| subscribe(&r1.ws(), "fan", Start::Latest))
        .collect();
    let fan_owner = c
        .storage
        .iter()
        .find(|n| n.topics().contains("fan"))
        .expect("an owner for the topic");
    let shards_with_subs = r1
        .metric_by_shard("fanfare_engine_subscriptions")
        .iter()
        .filter(|n| **n > 0)
        .count() as u64;
    assert!(shards_with_subs >= 1);
    // The owner's subscribers of the topic are the router shards' links.
    let info: serde_json::Value =
        serde_json::from_str(&fan_owner.get("/v1/admin/topics?prefix=t/fan")).unwrap();
    let link_subs = info["topics"][0]["subscribers"].as_u64().unwrap();
    assert_eq!(
        link_subs, shards_with_subs,
        "one upstream subscription per router shard with subscribers"
    );
    let upstream: u64 = r1.metric("fanfare_engine_upstream_topics");
    assert_eq!(
        upstream, shards_with_subs,
        "r1 holds one upstream topic per shard"
    );
    let items_before = fan_owner.metric("fanfare_net_cluster_link_items_out_total");
    for i in 0..3 {
        p2.publish("t", "fan", Bytes::from(format!("m{i}")))
            .unwrap();
    }
    for (i, sub) in many.iter_mut().enumerate().step_by(97) {
        let mut seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.items.iter().any(|(_, _, p)| p == "m2") && Instant::now() < deadline {
            if let Ok(m) = sub.recv() {
                record(m, &mut seen);
            }
        }
        let got: Vec<&str> = seen.items.iter().map(|(_, _, p)| p.as_str()).collect();
        assert!(
            got.ends_with(&["m0", "m1", "m2"]),
            "subscriber {i} got {got:?}"
        );
    }
    let items = fan_owner.metric("fanfare_net_cluster_link_items_out_total") - items_before;
    assert_eq!(
        items,
        3 * shards_with_subs,
        "each message crosses each router shard's link once, not once per subscriber"
    );
}

/// Every acknowledged (topic, epoch, seq, payload), in the order the acks came.
type Acked = Arc<Mutex<Vec<(String, u64, u64, String)>>>;

/// Publishes round-robin to `topics` through `url` until `stop`, retrying refused publishes;
/// every acknowledged publish is appended to the returned list as it is acked.
fn publisher(
    url: String,
    topics: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Acked) {
    let acked: Acked = Arc::default();
    let out = acked.clone();
    let h = std::thread::spawn(move || {
        // A publish gives up after 2 s (the test fails rather than hangs on a lost ack).
        let dial = |url: &str| {
            let c = Client::connect(url)?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok::<_, anyhow::Error>(c)
        };
        let mut c = dial(&url).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for t in &topics {
                n += 1;
                let body = format!("{t}:{n}");
                match c.publish("t", t, Bytes::from(body.clone())) {
                    Ok((e, s)) => out.lock().unwrap().push((t.clone(), e, s, body)),
                    Err(_) => {
                        // Refused (owner unavailable during a failover) or the connection
                        // closed: not acknowledged; reconnect if needed and go on.
                        if let Ok(c2) = dial(&url) {
                            c = c2;
                        }
                    }
                }
            }
            // Paced, so a run of a few seconds stays a few hundred messages per topic.
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (h, acked)
}

/// What each topic's subscriber saw so far.
type SeenBy = Arc<Mutex<BTreeMap<String, Seen>>>;

/// Reads `clients` into their `Seen` (shared, updated as items arrive) until `stop`.
fn readers(
    clients: Vec<(String, Client)>,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, SeenBy) {
    let seen: SeenBy = Arc::default();
    let out = seen.clone();
    let h = std::thread::spawn(move || {
        let mut clients = clients;
        while !stop.load(Ordering::Relaxed) {
            for (t, c) in clients.iter_mut() {
                c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                while let Ok(m) = c.recv() {
                    record(m, out.lock().unwrap().entry(t.clone()).or_default());
                }
            }
        }
    });
    (h, seen)
}

/// Whether, for every topic in `topics`, every message acknowledged in the topic's latest
/// acknowledged epoch has been seen.
fn caught_up(topics: &[String], acked: &Acked, seen: &SeenBy) -> bool {
    let acked = acked.lock().unwrap();
    let seen = seen.lock().unwrap();
    topics.iter().all(|t| {
        let Some(last_epoch) = acked.iter().filter(|a| &a.0 == t).map(|a| a.1).max() else {
            return false;
        };
        let got: BTreeSet<(u64, u64)> = seen
            .get(t)
            .map(|s| s.items.iter().map(|i| (i.0, i.1)).collect())
            .unwrap_or_default();
        acked
            .iter()
            .filter(|a| &a.0 == t && a.1 == last_epoch)
            .all(|a| got.contains(&(a.1, a.2)))
    })
}

/// Epochs in which `topic` was acknowledged so far.
fn acked_epochs(acked: &Acked, topic: &str) -> BTreeSet<u64> {
    acked
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.0 == topic)
        .map(|a| a.1)
        .collect()
}

#[test]
fn storage_node_killed_and_restarted() {
    let mut c = Cluster::start();
    let topics: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let clients: Vec<(String, Client)> = topics
        .iter()
        .map(|t| (t.clone(), subscribe(&c.routers[0].ws(), t, Start::Latest)))
        .collect();
    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_read = Arc::new(AtomicBool::new(false));
    let (reader, seen_live) = readers(clients, stop_read.clone());
    let (pubs, acked_live) = publisher(c.routers[1].ws(), topics.clone(), stop_pub.clone());
    let long = Duration::from_secs(20);
    eventually("every topic to deliver", long, || {
        let seen = seen_live.lock().unwrap();
        topics
            .iter()
            .all(|t| seen.get(t).is_some_and(|s| !s.items.is_empty()))
    });
    let victim_topics = c.storage[1].topics();
    assert!(!victim_topics.is_empty(), "s2 owns some of the 12 topics");
    let victim_addr = c.storage[1].cluster;
    let seed = c.storage[0].cluster;

    let killed = Instant::now();
    c.storage[1].kill9();
    c.wait_members(&["r1", "r2", "s1", "s3"]);
    eprintln!(
        "every node saw s2 down {:?} after kill -9",
        killed.elapsed()
    );
    // Its topics fail over: acknowledged in a second epoch, and delivered.
    eventually("s2's topics to be acknowledged elsewhere", long, || {
        victim_topics
            .iter()
            .all(|t| acked_epochs(&acked_live, t).len() >= 2)
    });
    let restarted = Node::start("s2", "storage", &[seed], Some(victim_addr));
    c.storage[1] = restarted;
    c.wait_members(&["r1", "r2", "s1", "s2", "s3"]);
    eventually("topics to move back to s2", Duration::from_secs(10), || {
        c.storage[1].topics().len() == victim_topics.len()
    });
    eventually("s2's topics to be acknowledged by it again", long, || {
        victim_topics
            .iter()
            .all(|t| acked_epochs(&acked_live, t).len() >= 3)
    });
    stop_pub.store(true, Ordering::Relaxed);
    pubs.join().unwrap();
    eventually("every acknowledged message to arrive", long, || {
        caught_up(&topics, &acked_live, &seen_live)
    });
    stop_read.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let acked = acked_live.lock().unwrap().clone();
    let seen = seen_live.lock().unwrap().clone();

    let acked_at: BTreeMap<(u64, u64, String), String> = acked
        .iter()
        .map(|(t, e, s, b)| ((*e, *s, t.clone()), b.clone()))
        .collect();
    for t in &topics {
        let s = seen.get(t).cloned().unwrap_or_default();
        assert_in_order(t, &s);
        // Every item reported is the acknowledged message at that position.
        for (e, q, p) in &s.items {
            if let Some(b) = acked_at.get(&(*e, *q, t.clone())) {
                assert_eq!(b, p, "{t}: ({e},{q}) carries another message");
            }
        }
        let last_epoch = s.items.last().map(|i| i.0);
        let tail = acked
            .iter()
            .filter(|a| &a.0 == t && Some(a.1) == last_epoch);
        let got: BTreeSet<u64> = s.items.iter().map(|i| i.1).collect();
        for a in tail {
            assert!(
                got.contains(&a.2),
                "{t}: acked ({}, {}) never arrived",
                a.1,
                a.2
            );
        }
        if victim_topics.contains(t) {
            assert_eq!(
                s.discontinuities.len(),
                2,
                "{t} (on s2): one discontinuity when s2 died, one when it came back: {s:?}"
            );
            let epochs: BTreeSet<u64> = s.items.iter().map(|i| i.0).collect();
            assert_eq!(epochs.len(), 3, "{t}: three owners' epochs: {s:?}");
        } else {
            assert!(
                s.discontinuities.is_empty(),
                "{t} (not on s2) saw a discontinuity: {s:?}"
            );
            let epochs: BTreeSet<u64> = s.items.iter().map(|i| i.0).collect();
            assert_eq!(epochs.len(), 1, "{t}: {s:?}");
            // No gap: everything acknowledged for it arrived.
            let n = acked.iter().filter(|a| &a.0 == t).count();
            assert_eq!(s.items.len(), n, "{t}: {s:?}");
        }
        assert!(!s.items.is_empty(), "{t}: nothing received");
    }
}

#[test]
fn router_killed_clients_resume_on_the_other() {
    let mut c = Cluster::start();
    let topic = "resume".to_owned();
    let mut sub = subscribe(&c.routers[0].ws(), &topic, Start::Latest);
    let stop = Arc::new(AtomicBool::new(false));
    let (pubs, acked) = publisher(c.routers[1].ws(), vec![topic.clone()], stop.clone());
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.items.len() < 5 && Instant::now() < deadline {
        if let Ok(m) = sub.recv() {
            record(m, &mut seen);
        }
    }
    assert!(seen.items.len() >= 5, "{seen:?}");
    c.routers[0].kill9();
    // The client reconnects to the other router and resumes after the last item it saw;
    // messages published meanwhile come from history.
    let (epoch, last, _) = seen.items.last().cloned().unwrap();
    let acked_at_kill = acked.lock().unwrap().len();
    let mut sub = subscribe(
        &c.routers[1].ws(),
        &topic,
        Start::At {
            epoch,
            seq: last + 1,
        },
    );
    // Publishing goes on across the resume, then stops.
    eventually(
        "publishes after the resume",
        Duration::from_secs(10),
        || acked.lock().unwrap().len() >= acked_at_kill + 10,
    );
    stop.store(true, Ordering::Relaxed);
    pubs.join().unwrap();
    let want: Vec<(u64, u64, String)> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e, s, b)| (*e, *s, b.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.items.len() < want.len() && Instant::now() < deadline {
        if let Ok(m) = sub.recv() {
            record(m, &mut seen);
        }
    }
    // Anything beyond what was acknowledged would show now.
    drain(&mut sub, &mut seen, Duration::from_millis(100));
    assert!(seen.discontinuities.is_empty(), "{seen:?}");
    assert_in_order(&topic, &seen);
    assert_eq!(
        seen.items, want,
        "every acknowledged message, once, in order"
    );
}

/// An idempotency key crosses the router -> storage link: a retry through either router is
/// answered by the owner with the original position.
#[test]
fn idempotent_publish_through_routers() {
    let c = Cluster::start();
    let mut a = connect(&c.routers[0].ws());
    let mut b = connect(&c.routers[1].ws());
    let first = a
        .publish_keyed("t", "idem", Bytes::from_static(b"x"), Some("order-1"))
        .unwrap();
    let via_a = a
        .publish_keyed("t", "idem", Bytes::from_static(b"x"), Some("order-1"))
        .unwrap();
    let via_b = b
        .publish_keyed("t", "idem", Bytes::from_static(b"x"), Some("order-1"))
        .unwrap();
    assert_eq!(via_a, first);
    assert_eq!(via_b, first, "the owner, not the router, remembers the key");
    let next = b
        .publish_keyed("t", "idem", Bytes::from_static(b"y"), Some("order-2"))
        .unwrap();
    assert_eq!(next, (first.0, first.1 + 1));
}

/// A storage node with a data dir, killed with -9 and restarted on it, serves its topics from
/// disk again: a subscriber through a router resumes from the first sequence and gets every
/// acknowledged message in the same epoch, no discontinuity, read back through the node link
/// in pages (memory holds 5 messages).
#[test]
fn storage_node_restarted_with_its_data_dir_serves_from_disk() {
    let data = test_dir().join("s1-data");
    let _ = std::fs::remove_dir_all(&data);
    let cfg = format!(
        "history_messages_max = 5\n[storage]\ndata_dir = {:?}\n{FAST_SWIM}",
        data.display().to_string()
    );
    let s1 = Node::start_config("s1", "storage", &[], None, &cfg);
    let addr = s1.cluster;
    let r1 = Node::start("r1", "router", &[addr], None);
    let mut c = Cluster {
        storage: vec![s1],
        routers: vec![r1],
    };
    c.wait_members(&["r1", "s1"]);
    let mut p = connect(&c.routers[0].ws());
    let mut epoch = 0;
    for i in 1..=30u64 {
        let (e, s) = p
            .publish("t", "kept", Bytes::from(format!("m{i}")))
            .unwrap();
        assert_eq!(s, i);
        epoch = e;
    }
    c.storage[0].kill9();
    // Restarted once the router saw it gone, as an operator would: a new process on the same
    // cluster address.
    eventually("r1 to see s1 gone", Duration::from_secs(20), || {
        c.routers[0].members() == BTreeSet::from(["r1".to_owned()])
    });
    c.storage[0] = Node::start_config("s1", "storage", &[], Some(addr), &cfg);
    c.wait_members(&["r1", "s1"]);
    let mut sub = None;
    eventually(
        "the router to reach s1 again",
        Duration::from_secs(20),
        || {
            let mut cl = connect(&c.routers[0].ws());
            match cl.subscribe("t", "kept", Start::At { epoch, seq: 1 }) {
                Ok(ServerMsg::Subscribed { .. }) => {
                    sub = Some(cl);
                    true
                }
                _ => false,
            }
        },
    );
    let mut sub = sub.unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen = Seen::default();
    read_items(&mut sub, &mut seen, 30);
    assert!(seen.discontinuities.is_empty(), "{seen:?}");
    let want: Vec<(u64, u64, String)> = (1..=30).map(|i| (epoch, i, format!("m{i}"))).collect();
    assert_eq!(seen.items, want);
    // The topic goes on in its epoch.
    let mut p = connect(&c.routers[0].ws());
    assert_eq!(
        p.publish("t", "kept", Bytes::from("m31")).unwrap(),
        (epoch, 31)
    );
    let _ = std::fs::remove_dir_all(&data);
}
