//! The shard's model test: random interleavings of publish, subscribe, unsubscribe and drain
//! with stalling sinks, against what every subscriber must see.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

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
    let cfg = Config {
        history_messages_max: 5,
        epoch_base: Some(100),
        ..Config::default()
    };
    State::new(
        ShardId(0),
        shards,
        Arc::new(cfg),
        Arc::new(ShardStats::default()),
    )
}

quickcheck! {
    /// Sequences per topic are consecutive for any interleaving of operations, and every
    /// subscriber sees each message once, in order, except where a discontinuity tells it
    /// exactly what it missed; after a final drain every subscriber is at the head.
    fn subscribers_never_miss_silently(ops: Vec<Op>) -> bool {
        let mut st = state(1);
        let topics: Vec<TopicKey> = (0..3).map(|i| TopicKey::new_unchecked("ns", &format!("t{i}"))).collect();
        let mut published = [0u64; 3];
        let mut readers: Vec<Reader> = Vec::new();
        for op in ops {
            match op {
                Op::Publish(t) => {
                    let t = usize::from(t);
                    let p = st.owner_publish(topics[t].clone(), Bytes::from_static(b"x"), None).unwrap();
                    published[t] += 1;
                    if p.seq != Seq(published[t]) || p.epoch != Epoch(100 + t as u64) && p.epoch.0 < 100 {
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
                    let acc = st.subscribe(topics[t].clone(), start, sink.clone(), false).unwrap();
                    readers.push(Reader { sub: acc.sub, topic: t, sink, expect: None, closed: false });
                }
                Op::Unsubscribe(i) => {
                    if !readers.is_empty() {
                        let r = readers.remove(usize::from(i) % readers.len());
                        st.remove_sub(r.sub, None);
                    }
                }
                Op::Drain(i) => {
                    if !readers.is_empty() {
                        let n = readers.len();
                        let r = &mut readers[usize::from(i) % n];
                        if !r.drain() {
                            return false;
                        }
                        st.drained(r.sub);
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
                st.drained(r.sub);
                if r.sink.q.borrow().is_empty() {
                    break;
                }
            }
            if r.closed || r.expect != Some(Seq(published[r.topic] + 1)) {
                return false;
            }
        }
        // The index and the topics agree.
        st.sub_index.len() == readers.len()
            && st.sub_index.iter().all(|(id, (k, i))| st.local[k].subs[*i].id == *id)
    }
}
