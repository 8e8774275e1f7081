//! A topic's recent idempotency keys: which `(publisher, key)` was answered with which
//! `(epoch, seq)`, bounded by count and age (oldest forgotten first).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::message::Published;

/// The scope of a key: who published (None: an anonymous publisher) and the key itself.
type Scope = (Option<Arc<str>>, Arc<str>);

/// Recent keys of one topic. Empty (no allocation) until a publish carries a key.
#[derive(Default)]
pub(crate) struct Dedup {
    by_key: AHashMap<Scope, Published>,
    /// Keys in the order they were first seen, with when: the eviction order.
    order: VecDeque<(Instant, Scope)>,
}

impl Dedup {
    /// The original answer to `(publisher, key)`, if it was seen within `window`.
    pub(crate) fn get(
        &mut self,
        publisher: &Option<Arc<str>>,
        key: &Arc<str>,
        now: Instant,
        window: Duration,
    ) -> Option<Published> {
        self.expire(now, window);
        self.by_key.get(&(publisher.clone(), key.clone())).copied()
    }

    /// Remembers that `(publisher, key)` was answered `p`; past `max` keys the oldest goes.
    pub(crate) fn insert(
        &mut self,
        publisher: Option<Arc<str>>,
        key: Arc<str>,
        p: Published,
        now: Instant,
        max: usize,
    ) -> usize {
        let mut evicted = 0;
        while self.order.len() >= max.max(1) {
            if let Some((_, old)) = self.order.pop_front() {
                self.by_key.remove(&old);
                evicted += 1;
            }
        }
        let scope = (publisher, key);
        self.order.push_back((now, scope.clone()));
        self.by_key.insert(scope, p);
        evicted
    }

    /// Forgets keys older than `window`.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) < window {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }

    /// Keys remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Epoch, Seq};

    fn p(seq: u64) -> Published {
        Published {
            epoch: Epoch(1),
            seq: Seq(seq),
            durability: fanfare_proto::Durability::Memory,
        }
    }

    #[test]
    fn keys_are_scoped_bounded_and_expire() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(120);
        let (alice, bob) = (
            Some(Arc::<str>::from("alice")),
            Some(Arc::<str>::from("bob")),
        );
        let k: Arc<str> = "k1".into();
        assert_eq!(d.get(&alice, &k, t0, w), None);
        d.insert(alice.clone(), k.clone(), p(1), t0, 2);
        assert_eq!(d.get(&alice, &k, t0, w), Some(p(1)));
        assert_eq!(
            d.get(&bob, &k, t0, w),
            None,
            "another publisher's key is another key"
        );
        assert_eq!(d.get(&None, &k, t0, w), None);
        // Past the count bound the oldest key goes.
        d.insert(alice.clone(), "k2".into(), p(2), t0, 2);
        assert_eq!(d.insert(alice.clone(), "k3".into(), p(3), t0, 2), 1);
        assert_eq!(d.get(&alice, &k, t0, w), None);
        assert_eq!(d.len(), 2);
        // Past the window every key goes.
        assert_eq!(d.get(&alice, &"k3".into(), t0 + w, w), None);
        assert_eq!(d.len(), 0);
    }
}
