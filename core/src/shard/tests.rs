//! The shard's model test: random interleavings of publish, subscribe, unsubscribe and drain
//! with stalling sinks, against what every subscriber must see.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fanfare_proto::Start;
use quickcheck::{quickcheck, Arbitrary, Gen};

use crate::config::Config;
use crate::ids::{Epoch, Seq, ShardId, SubId, TopicKey};
use crate::shard::state::State;
use crate::sink::{Accept, Offer, Sink};
use crate::stats::ShardStats;

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Subscribed(Seq),
    Item(Epoch, Seq),
    Disc(Seq, Seq),
    Closed,
}

/// A subscriber queue holding at most `cap` items.
struct TestSink {
    cap: usize,
    q: RefCell<VecDeque<Ev>>,
}

impl Sink for TestSink {
    fn offer(&self, _sub: SubId, o: Offer<'_>) -> Accept {
        let mut q = self.q.borrow_mut();
        let ev = match o {
            Offer::Subscribed { next_seq, .. } => Ev::Subscribed(next_seq),
            Offer::Item(d) => {
                if q.iter().filter(|e| matches!(e, Ev::Item(..))).count() >= self.cap {
                    return Accept::Full;
                }
                Ev::Item(d.message.epoch, d.message.seq)
            }
            Offer::Discontinuity {
                last_seq, new_seq, ..
            } => Ev::Disc(last_seq, new_seq),
            Offer::Heartbeat { .. } => return Accept::Queued,
            Offer::Closed(_) => Ev::Closed,
            Offer::Presence(_) => return Accept::Queued,
        };
        q.push_back(ev);
        Accept::Queued
    }
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Subscribe(u8, u8),
    Unsubscribe(u8),
    Drain(u8),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 8 {
            0..=3 => Op::Publish(u8::arbitrary(g) % 3),
            4 => Op::Subscribe(u8::arbitrary(g) % 3, u8::arbitrary(g)),
            5 => Op::Unsubscribe(u8::arbitrary(g)),
            _ => Op::Drain(u8::arbitrary(g)),
        }
    }
}

struct Reader {
    sub: SubId,
    topic: usize,
    sink: Rc<TestSink>,
    /// Next sequence this reader must see; None until Subscribed.
    expect: Option<Seq>,
    closed: bool,
}

impl Reader {
    /// Reads everything queued, checking the stream; returns false on a violation.
    fn drain(&mut self) -> bool {
        let evs: Vec<Ev> = self.sink.q.borrow_mut().drain(..).collect();
        for ev in evs {
            match (ev, self.expect) {
                (Ev::Subscribed(s), None) => self.expect = Some(s),
                (Ev::Item(_, s), Some(e)) if s == e => self.expect = Some(Seq(s.0 + 1)),
                // A discontinuity must start exactly where the reader is and move forward.
                (Ev::Disc(last, new), Some(e)) if last.0 + 1 == e.0 && new > last => {
                    self.expect = Some(new)
                }
                // Right after Subscribed, the discontinuity's new_seq is the announced start.
                (Ev::Disc(_, new), Some(e)) if new == e => {}
                (Ev::Closed, _) => self.closed = true,
                _ => return false,
            }
        }
        true
    }
}

fn state(shards: u16) -> State {
    state_of(0, shards)
}

fn state_of(id: u16, shards: u16) -> State {
    let cfg = Config {
        history_messages_max: 5,
        epoch_base: Some(100),
        ..Config::default()
    };
    State::new(
        ShardId(id),
        shards,
        Arc::new(cfg),
        Arc::new(ShardStats::default()),
        Instant::now(),
    )
}

/// Shards of one node whose mesh is driven by hand: a message moves only when the model says
/// so, so any interleaving of delivery with the other operations can be tried.
struct Node {
    shards: Vec<State>,
}

impl Node {
    fn new(n: u16) -> Self {
        Self {
            shards: (0..n).map(|i| state_of(i, n)).collect(),
        }
    }

    /// Hands everything shard `from` has queued for shard `to` to `to`; whether anything moved.
    fn deliver(&mut self, from: usize, to: usize) -> bool {
        if from == to {
            return false;
        }
        let msgs = self.shards[from].mesh.outboxes().take(to as u16);
        let moved = !msgs.is_empty();
        for m in msgs {
            self.shards[to].handle_mesh(m, Instant::now());
        }
        moved
    }

    /// Delivers until no shard has anything queued.
    fn settle(&mut self) {
        let n = self.shards.len();
        while (0..n)
            .flat_map(|f| (0..n).map(move |t| (f, t)))
            .fold(false, |moved, (f, t)| self.deliver(f, t) || moved)
        {}
    }

    fn owner(&self, key: &TopicKey) -> &State {
        &self.shards[usize::from(self.shards[0].owner_of(key).0)]
    }
}

#[derive(Debug, Clone)]
enum MeshOp {
    Publish { shard: u8, topic: u8 },
    Subscribe { shard: u8, topic: u8, how: u8 },
    Unsubscribe(u8),
    Drain(u8),
    Deliver { from: u8, to: u8 },
}

impl Arbitrary for MeshOp {
    fn arbitrary(g: &mut Gen) -> Self {
        let b = |g: &mut Gen| u8::arbitrary(g);
        match b(g) % 10 {
            0..=2 => MeshOp::Publish {
                shard: b(g),
                topic: b(g) % 4,
            },
            3 => MeshOp::Subscribe {
                shard: b(g),
                topic: b(g) % 4,
                how: b(g),
            },
            4 => MeshOp::Unsubscribe(b(g)),
            5 | 6 => MeshOp::Drain(b(g)),
            _ => MeshOp::Deliver {
                from: b(g),
                to: b(g),
            },
        }
    }
}

/// A reader on a shard of a [`Node`].
struct MeshReader {
    shard: usize,
    reader: Reader,
}

quickcheck! {
    /// Sequences per topic are consecutive for any interleaving of operations, and every
    /// subscriber sees each message once, in order, except where a discontinuity tells it
    /// exactly what it missed; after a final drain every subscriber is at the head.
    fn subscribers_never_miss_silently(ops: Vec<Op>) -> bool {
        let mut st = state(1);
        let topics: Vec<TopicKey> = (0..3).map(|i| TopicKey::new_unchecked("ns", &format!("t{i}"))).collect();
        let mut published = [0u64; 3];
        let mut epochs: [Option<Epoch>; 3] = [None; 3];
        let mut readers: Vec<Reader> = Vec::new();
        for op in ops {
            match op {
                Op::Publish(t) => {
                    let t = usize::from(t);
                    let Ok(crate::shard::disk::Ordered::Done(p)) = st.owner_publish(topics[t].clone(), Bytes::from_static(b"x"), Default::default(), Instant::now()) else {
                        return false; // in memory, a publish is answered at once
                    };
                    published[t] += 1;
                    // One epoch per topic for the whole run (nothing restarts it here), from the
                    // configured base on; sequences consecutive from 1.
                    let epoch = *epochs[t].get_or_insert(p.epoch);
                    if p.seq != Seq(published[t]) || p.epoch != epoch || p.epoch.0 < 100 {
                        return false;
                    }
                }
                Op::Subscribe(t, how) => {
                    let t = usize::from(t);
                    let start = match how % 3 {
                        0 => Start::Latest,
                        1 => Start::LastN(u32::from(how % 7)),
                        _ => {
                            let epoch = st.owned.get(&topics[t]).map_or(0, |o| o.epoch.0);
                            Start::At { epoch, seq: published[t].saturating_sub(u64::from(how % 9)) + 1 }
                        }
                    };
                    let sink = Rc::new(TestSink { cap: 3, q: RefCell::new(VecDeque::new()) });
                    let acc = st.subscribe(topics[t].clone(), start, sink.clone(), false, Default::default(), Instant::now()).unwrap();
                    readers.push(Reader { sub: acc.sub, topic: t, sink, expect: None, closed: false });
                }
                Op::Unsubscribe(i) => {
                    if !readers.is_empty() {
                        let r = readers.remove(usize::from(i) % readers.len());
                        st.remove_sub(r.sub, None, Instant::now());
                    }
                }
                Op::Drain(i) => {
                    if !readers.is_empty() {
                        let n = readers.len();
                        let r = &mut readers[usize::from(i) % n];
                        if !r.drain() {
                            return false;
                        }
                        st.drained(r.sub, Instant::now());
                    }
                }
            }
        }
        // Final: drain everyone until quiet; each must reach its topic's head.
        for r in readers.iter_mut() {
            for _ in 0..100 {
                if !r.drain() {
                    return false;
                }
                st.drained(r.sub, Instant::now());
                if r.sink.q.borrow().is_empty() {
                    break;
                }
            }
            if r.closed || r.expect != Some(Seq(published[r.topic] + 1)) {
                return false;
            }
        }
        // Every part keeps its invariants (the index and the topics agree, among others).
        st.check_all();
        st.local.subscriptions() == readers.len()
    }
}

quickcheck! {
    /// The same promise across three shards, with publishes and subscriptions made on any
    /// shard (so most cross the mesh), subscribers left pending while their owner's answer is
    /// in flight, and mesh delivery interleaved with everything else: every publish is
    /// acknowledged once with the next sequence of its topic's one epoch, and every subscriber
    /// sees each message once, in order, or a discontinuity naming exactly what it missed.
    fn subscribers_never_miss_silently_across_shards(ops: Vec<MeshOp>) -> bool {
        const SHARDS: usize = 3;
        let mut node = Node::new(SHARDS as u16);
        let topics: Vec<TopicKey> = (0..4).map(|i| TopicKey::new_unchecked("ns", &format!("t{i}"))).collect();
        let mut waiting: Vec<(usize, flume::Receiver<Result<crate::message::Published, crate::message::PublishError>>)> = Vec::new();
        let mut acks: Vec<Vec<crate::message::Published>> = vec![Vec::new(); 4];
        let mut issued = [0u64; 4];
        let mut readers: Vec<MeshReader> = Vec::new();
        let collect = |waiting: &mut Vec<(usize, flume::Receiver<_>)>, acks: &mut Vec<Vec<crate::message::Published>>| -> bool {
            let mut ok = true;
            waiting.retain(|(t, rx)| match rx.try_recv() {
                Ok(Ok(p)) => { acks[*t].push(p); false }
                Ok(Err(_)) => { ok = false; false }
                Err(_) => true,
            });
            ok
        };
        for op in ops {
            match op {
                MeshOp::Publish { shard, topic } => {
                    let (s, t) = (usize::from(shard) % SHARDS, usize::from(topic));
                    issued[t] += 1;
                    match node.shards[s].publish(topics[t].clone(), Bytes::from_static(b"x"), Default::default(), false, Instant::now()) {
                        Ok(super::router::PublishStarted::Done(p)) => acks[t].push(p),
                        Ok(super::router::PublishStarted::Waiting(rx)) => waiting.push((t, rx)),
                        // Forwarded to the owner shard: its answer comes back through the mesh.
                        Ok(super::router::PublishStarted::Forwarded(ticket)) => {
                            let (tx, rx) = flume::bounded(1);
                            node.shards[s].answer_when_forwarded(ticket, crate::shard::disk::Answer::Channel(tx));
                            waiting.push((t, rx));
                        }
                        // No data dir in this model: nothing waits for a disk.
                        Ok(super::router::PublishStarted::Stored(_)) | Err(_) => return false,
                    }
                }
                MeshOp::Subscribe { shard, topic, how } => {
                    let (s, t) = (usize::from(shard) % SHARDS, usize::from(topic));
                    let owner = node.owner(&topics[t]);
                    let head = owner.owned.get(&topics[t]).map_or(0, |o| o.next_seq.0 - 1);
                    let start = match how % 3 {
                        0 => Start::Latest,
                        1 => Start::LastN(u32::from(how % 7)),
                        _ => {
                            let epoch = owner.owned.get(&topics[t]).map_or(0, |o| o.epoch.0);
                            Start::At { epoch, seq: head.saturating_sub(u64::from(how % 9)) + 1 }
                        }
                    };
                    let sink = Rc::new(TestSink { cap: 3, q: RefCell::new(VecDeque::new()) });
                    // Half of them enter presence; all count towards occupancy.
                    let presence = crate::presence::PresenceOptions {
                        enter: (how % 2 == 0).then(|| (Arc::from("who"), Bytes::new())),
                        member_events: how % 4 == 0,
                        occupancy_events: how % 3 == 0,
                    };
                    let Ok(acc) = node.shards[s].subscribe(topics[t].clone(), start, sink.clone(), false, presence, Instant::now()) else {
                        return false;
                    };
                    readers.push(MeshReader {
                        shard: s,
                        reader: Reader { sub: acc.sub, topic: t, sink, expect: None, closed: false },
                    });
                }
                MeshOp::Unsubscribe(i) => {
                    if !readers.is_empty() {
                        let r = readers.remove(usize::from(i) % readers.len());
                        node.shards[r.shard].remove_sub(r.reader.sub, None, Instant::now());
                    }
                }
                MeshOp::Drain(i) => {
                    if !readers.is_empty() {
                        let n = readers.len();
                        let r = &mut readers[usize::from(i) % n];
                        if !r.reader.drain() {
                            return false;
                        }
                        node.shards[r.shard].drained(r.reader.sub, Instant::now());
                    }
                }
                MeshOp::Deliver { from, to } => {
                    node.deliver(usize::from(from) % SHARDS, usize::from(to) % SHARDS);
                }
            }
            if !collect(&mut waiting, &mut acks) {
                return false;
            }
        }
        // Everything in flight arrives; every publish is acknowledged.
        node.settle();
        if !collect(&mut waiting, &mut acks) || !waiting.is_empty() {
            return false;
        }
        for (t, a) in acks.iter_mut().enumerate() {
            if a.len() as u64 != issued[t] {
                return false;
            }
            // One epoch per topic; sequences 1..=n, each once.
            a.sort_by_key(|p| p.seq);
            if a.iter().enumerate().any(|(i, p)| p.seq != Seq(i as u64 + 1) || p.epoch != a[0].epoch || p.epoch.0 < 100) {
                return false;
            }
        }
        // Readers drain until quiet; each reaches its topic's head.
        for _ in 0..100 {
            let mut busy = false;
            for r in readers.iter_mut() {
                if !r.reader.drain() {
                    return false;
                }
                node.shards[r.shard].drained(r.reader.sub, Instant::now());
            }
            node.settle();
            for r in readers.iter() {
                busy |= !r.reader.sink.q.borrow().is_empty();
            }
            if !busy {
                break;
            }
        }
        for r in readers.iter() {
            let head = node.owner(&topics[r.reader.topic]).owned.get(&topics[r.reader.topic]).map_or(0, |o| o.next_seq.0 - 1);
            if r.reader.closed || r.reader.expect != Some(Seq(head + 1)) {
                return false;
            }
        }
        // Presence: each topic's owner counts every reader and lists the ones that entered.
        for (t, key) in topics.iter().enumerate() {
            let (occ, members) = node.owner(key).owned.get(key).and_then(|o| o.roster.as_ref()).map_or((0, 0), |r| (r.occupancy(), r.member_count()));
            let on_topic = readers.iter().filter(|r| r.reader.topic == t);
            let entered = on_topic.clone().filter(|r| node.shards[r.shard].local.sub(r.reader.sub).and_then(|s| s.presence.as_ref()).is_some_and(|p| p.member.is_some())).count();
            if occ != on_topic.count() as u64 || members != entered {
                return false;
            }
        }
        // Every part of every shard keeps its invariants.
        node.shards.iter().for_each(State::check_all);
        true
    }
}
