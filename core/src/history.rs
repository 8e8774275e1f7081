//! A topic's history: the last messages, bounded by count, bytes and age.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::Seq;
use crate::message::Message;

/// The last messages of a topic, oldest first, with consecutive sequence numbers.
#[derive(Debug)]
pub struct History {
    messages: VecDeque<(Instant, Message)>,
    bytes: usize,
    count_max: usize,
    bytes_max: usize,
}

impl History {
    /// An empty history keeping at most `count_max` messages and `bytes_max` payload bytes.
    pub fn new(count_max: usize, bytes_max: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            bytes: 0,
            count_max,
            bytes_max,
        }
    }

    /// Appends `m`, evicting the oldest messages until both bounds hold. A message larger
    /// than `bytes_max` is not kept (the history is left empty), since keeping it would break
    /// the bound. A sequence that does not follow the last one (records lost from the log
    /// between them, found at start-up) starts the history over: it only ever holds
    /// consecutive sequences.
    pub fn push(&mut self, now: Instant, m: Message) {
        if self
            .messages
            .back()
            .is_some_and(|(_, b)| b.seq.0 + 1 != m.seq.0)
        {
            self.clear();
        }
        self.bytes += m.payload.len();
        self.messages.push_back((now, m));
        while self.messages.len() > self.count_max || self.bytes > self.bytes_max {
            self.pop_front();
        }
        debug_assert!(self.messages.len() <= self.count_max && self.bytes <= self.bytes_max);
    }

    /// Forgets every message.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some((_, old)) = self.messages.pop_front() {
            self.bytes -= old.payload.len();
        }
    }

    /// Drops messages published before `now - age`.
    pub fn expire(&mut self, now: Instant, age: Duration) {
        while let Some((at, _)) = self.messages.front() {
            if now.saturating_duration_since(*at) <= age {
                break;
            }
            self.pop_front();
        }
    }

    /// The oldest sequence still held.
    pub fn first_seq(&self) -> Option<Seq> {
        self.messages.front().map(|(_, m)| m.seq)
    }

    /// The newest sequence held.
    pub fn last_seq(&self) -> Option<Seq> {
        self.messages.back().map(|(_, m)| m.seq)
    }

    /// When the newest message was appended.
    pub fn last_at(&self) -> Option<Instant> {
        self.messages.back().map(|(at, _)| *at)
    }

    /// Messages with sequence `>= from`, oldest first (empty when `from` is past the end).
    pub fn since(&self, from: Seq) -> impl Iterator<Item = &Message> {
        let skip = match self.first_seq() {
            Some(first) if from > first => {
                (from.0 - first.0).min(self.messages.len() as u64) as usize
            }
            _ => 0,
        };
        self.messages.iter().skip(skip).map(|(_, m)| m)
    }

    /// Number of messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Epoch;
    use bytes::Bytes;
    use quickcheck::quickcheck;

    fn msg(seq: u64, len: usize) -> Message {
        Message::new(Epoch(1), Seq(seq), Bytes::from(vec![0u8; len]), None)
    }

    quickcheck! {
        /// The history equals the longest suffix of everything pushed that fits both bounds.
        fn matches_vecdeque_model(sizes: Vec<u8>, count_max: u8, bytes_max: u16, from: u8) -> bool {
            let count_max = usize::from(count_max % 50) + 1;
            let bytes_max = usize::from(bytes_max % 2000);
            let now = Instant::now();
            let mut h = History::new(count_max, bytes_max);
            let mut all: VecDeque<(u64, usize)> = VecDeque::new();
            for (i, s) in sizes.iter().enumerate() {
                let seq = i as u64 + 1;
                h.push(now, msg(seq, usize::from(*s)));
                all.push_back((seq, usize::from(*s)));
            }
            // Model: drop from the front until both bounds hold.
            let mut model = all.clone();
            while model.len() > count_max || model.iter().map(|x| x.1).sum::<usize>() > bytes_max {
                model.pop_front();
            }
            let got: Vec<(u64, usize)> = h.since(Seq(0)).map(|m| (m.seq.0, m.payload.len())).collect();
            let from = u64::from(from);
            let got_from: Vec<u64> = h.since(Seq(from)).map(|m| m.seq.0).collect();
            let want_from: Vec<u64> = model.iter().map(|x| x.0).filter(|s| *s >= from).collect();
            got == model.into_iter().collect::<Vec<_>>()
                && h.bytes() == got.iter().map(|x| x.1).sum::<usize>()
                && got_from == want_from
        }
    }

    #[test]
    fn expire_by_age() {
        let t0 = Instant::now();
        let mut h = History::new(10, 1000);
        h.push(t0, msg(1, 1));
        h.push(t0 + Duration::from_secs(5), msg(2, 1));
        h.expire(t0 + Duration::from_secs(6), Duration::from_secs(3));
        assert_eq!(h.first_seq(), Some(Seq(2)));
        h.expire(t0 + Duration::from_secs(60), Duration::from_secs(3));
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn a_sequence_that_does_not_follow_starts_over() {
        let now = Instant::now();
        let mut h = History::new(10, 1000);
        h.push(now, msg(1, 1));
        h.push(now, msg(2, 1));
        h.push(now, msg(5, 3));
        assert_eq!((h.first_seq(), h.len(), h.bytes()), (Some(Seq(5)), 1, 3));
    }

    #[test]
    fn oversized_message_is_not_kept() {
        let mut h = History::new(10, 4);
        h.push(Instant::now(), msg(1, 5));
        assert!(h.is_empty());
    }
}
