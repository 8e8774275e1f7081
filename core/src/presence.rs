//! Presence and occupancy: who is subscribed to a topic, cluster-wide.
//!
//! Every subscription counts towards its topic's **occupancy**; one that asks to *enter* is
//! also listed as a **member** (its client id and a small info blob) while it lasts. The
//! numbers flow up the same tree as subscriptions do: each shard sums what its subscribers hold
//! for a topic (a node link's subscription holds what its router shard reported) and sends the
//! changes to the topic's owner as [`PresenceDelta`]s; the owner keeps one [`Roster`] per topic
//! with each source shard's share, answers queries from it, and sends presence events back down
//! to every shard with subscribers. A share disappears with its source: when a shard's last
//! subscriber of the topic leaves, and, through the link subscription that carried it, when a
//! router's link closes, which is how members of a router killed with -9 leave.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use fanfare_proto::PresenceAction;

use crate::ids::ShardId;

/// Names one member (one entered subscription) cluster-wide while it lasts; never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u64);

/// A listed subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: MemberId,
    /// Who: the token's subject, or the client's choice with authentication off.
    pub client_id: Arc<str>,
    /// The member's own blob (at most `Config::presence_info_bytes_max`).
    pub info: Bytes,
}

/// A presence event, as subscribers that asked for them receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// What happened.
    pub action: PresenceAction,
    /// The member joining, leaving or refused.
    pub member: Option<Member>,
    /// The topic's subscriber count, cluster-wide, when the event was made.
    pub occupancy: u64,
    /// `Overflow`: join and leave events not sent because of the rate limit.
    pub skipped: u64,
}

/// A subscription's presence options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceOptions {
    /// Be listed as this client id with this info while subscribed.
    pub enter: Option<(Arc<str>, Bytes)>,
    /// Receive join, leave and overflow events.
    pub member_events: bool,
    /// Receive occupancy events (at most one per `Config::occupancy_interval`).
    pub occupancy_events: bool,
}

impl PresenceOptions {
    /// Whether any option is on.
    pub fn any(&self) -> bool {
        self.enter.is_some() || self.member_events || self.occupancy_events
    }
}

/// What a presence query asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceQuery {
    /// List members (else occupancy only).
    pub members: bool,
    /// Members with ids above this.
    pub after: u64,
    /// Page size (capped by `Config::presence_page_max`).
    pub limit: usize,
}

/// A topic's presence: its occupancy and one page of members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceState {
    /// Subscribers, cluster-wide.
    pub occupancy: u64,
    /// Members listed in all.
    pub members_total: u64,
    /// This page, in member id order.
    pub members: Vec<Member>,
    /// 0 on the last page, else the `after` of the next page.
    pub next_after: u64,
}

/// A change of what one source (a shard, or a router shard behind a node link) holds for a
/// topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceDelta {
    /// Replaces what the source held (`count` is then absolute).
    pub reset: bool,
    /// The change of its subscriber count (or the count, on a reset).
    pub count: i64,
    /// Members entering.
    pub joins: Vec<Member>,
    /// Members leaving.
    pub leaves: Vec<MemberId>,
}

impl PresenceDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.reset && self.count == 0 && self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// A subscription's presence: its options, and for a node link's subscription what the
/// router shard behind it holds.
#[derive(Debug, Default)]
pub(crate) struct SubPresence {
    pub member: Option<Member>,
    pub member_events: bool,
    pub occupancy_events: bool,
    /// A node link's subscription: the share its router shard reported.
    pub remote: Option<Share>,
    /// Refused a listing before its `Subscribed` went out: told right after it.
    pub refused: bool,
}

/// What one source holds for a topic.
#[derive(Debug, Default, Clone)]
pub(crate) struct Share {
    pub count: u64,
    pub members: ahash::AHashMap<MemberId, Member>,
}

impl Share {
    /// Applies `d`; returns the delta it amounts to (a reset becomes the difference), with
    /// members past `members_max` left out.
    pub(crate) fn apply(&mut self, d: PresenceDelta, members_max: usize) -> PresenceDelta {
        let mut out = PresenceDelta::default();
        if d.reset {
            let keep: ahash::AHashSet<MemberId> = d.joins.iter().map(|m| m.id).collect();
            out.leaves = self
                .members
                .keys()
                .filter(|id| !keep.contains(id))
                .copied()
                .collect();
            for id in &out.leaves {
                self.members.remove(id);
            }
            let new = d.count.max(0) as u64;
            out.count = new as i64 - self.count as i64;
            self.count = new;
        } else {
            let c = (self.count as i64 + d.count).max(0) as u64;
            out.count = c as i64 - self.count as i64;
            self.count = c;
            for id in d.leaves {
                if self.members.remove(&id).is_some() {
                    out.leaves.push(id);
                }
            }
        }
        for m in d.joins {
            if self.members.len() >= members_max && !self.members.contains_key(&m.id) {
                continue;
            }
            if self.members.get(&m.id) != Some(&m) {
                self.members.insert(m.id, m.clone());
                out.joins.push(m);
            }
        }
        out
    }
}

/// A topic's presence at its owner: each source shard's share, the members in id order, and
/// the state of its event rate limits.
#[derive(Debug)]
pub(crate) struct Roster {
    counts: Vec<(ShardId, u64)>,
    total: u64,
    members: BTreeMap<MemberId, (ShardId, Member)>,
    /// Occupancy last announced, and when.
    announced: u64,
    announced_at: Option<Instant>,
    /// Join/leave events in the current one-second window, and those skipped.
    window_start: Instant,
    window_events: u32,
    pub skipped: u64,
}

/// What applying a delta produced at the owner.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Join and leave events, in order.
    pub events: Vec<(PresenceAction, Member)>,
    /// Members refused for the member limit.
    pub refused: Vec<Member>,
}

impl Roster {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            counts: Vec::new(),
            total: 0,
            members: BTreeMap::new(),
            announced: 0,
            announced_at: None,
            window_start: now,
            window_events: 0,
            skipped: 0,
        }
    }

    /// Subscribers, cluster-wide.
    pub(crate) fn occupancy(&self) -> u64 {
        self.total
    }

    /// Members listed.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether nothing is held (no subscriber anywhere).
    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0 && self.members.is_empty()
    }

    fn set_count(&mut self, from: ShardId, f: impl FnOnce(u64) -> u64) {
        let i = match self.counts.iter().position(|(s, _)| *s == from) {
            Some(i) => i,
            None => {
                self.counts.push((from, 0));
                self.counts.len() - 1
            }
        };
        let old = self.counts[i].1;
        let new = f(old);
        self.total = self.total - old + new;
        if new == 0 {
            self.counts.swap_remove(i);
        } else {
            self.counts[i].1 = new;
        }
    }

    /// Applies a delta from source `from` (never a reset: shards send differences).
    pub(crate) fn apply(&mut self, from: ShardId, d: PresenceDelta, members_max: usize) -> Changes {
        let mut ch = Changes::default();
        if d.reset {
            // A shard's reset replaces its whole share.
            let mine: Vec<MemberId> = self
                .members
                .iter()
                .filter(|(_, (s, _))| *s == from)
                .map(|(id, _)| *id)
                .collect();
            let keep: ahash::AHashSet<MemberId> = d.joins.iter().map(|m| m.id).collect();
            for id in mine.into_iter().filter(|id| !keep.contains(id)) {
                if let Some((_, m)) = self.members.remove(&id) {
                    ch.events.push((PresenceAction::Leave, m));
                }
            }
            let c = d.count.max(0) as u64;
            self.set_count(from, |_| c);
        } else {
            self.set_count(from, |old| (old as i64 + d.count).max(0) as u64);
            for id in d.leaves {
                if let Some((s, _)) = self.members.get(&id) {
                    if *s == from {
                        if let Some((_, m)) = self.members.remove(&id) {
                            ch.events.push((PresenceAction::Leave, m));
                        }
                    }
                }
            }
        }
        for m in d.joins {
            let full = self.members.len() >= members_max;
            match self.members.get_mut(&m.id) {
                Some((s, old)) if *s == from => {
                    if *old != m {
                        *old = m.clone();
                        ch.events.push((PresenceAction::Join, m));
                    }
                }
                Some(_) => {} // another source holds it (ids are random 64-bit: never)
                None if full => ch.refused.push(m),
                None => {
                    self.members.insert(m.id, (from, m.clone()));
                    ch.events.push((PresenceAction::Join, m));
                }
            }
        }
        ch
    }

    /// Removes everything source `from` held (its last subscriber left, or it moved away).
    pub(crate) fn drop_source(&mut self, from: ShardId) -> Changes {
        let mut ch = Changes::default();
        self.set_count(from, |_| 0);
        let gone: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, (s, _))| *s == from)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some((_, m)) = self.members.remove(&id) {
                ch.events.push((PresenceAction::Leave, m));
            }
        }
        ch
    }

    /// One page of the state.
    pub(crate) fn page(&self, q: PresenceQuery) -> PresenceState {
        let mut st = PresenceState {
            occupancy: self.total,
            members_total: self.members.len() as u64,
            members: Vec::new(),
            next_after: 0,
        };
        if !q.members || q.limit == 0 {
            return st;
        }
        let mut it = self
            .members
            .range(MemberId(q.after.saturating_add(1))..)
            .map(|(_, (_, m))| m);
        st.members = it.by_ref().take(q.limit).cloned().collect();
        if it.next().is_some() {
            st.next_after = st.members.last().map_or(0, |m| m.id.0);
        }
        st
    }

    /// Whether a join/leave event may go out now (at most `per_second` per one-second
    /// window); counts it, or counts it as skipped.
    pub(crate) fn take_event_budget(&mut self, now: Instant, per_second: u32) -> bool {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_events = 0;
        }
        if self.window_events < per_second {
            self.window_events += 1;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    /// The skipped count to announce, once the window that skipped them is over.
    pub(crate) fn take_overflow(&mut self, now: Instant) -> Option<u64> {
        if self.skipped == 0
            || now.saturating_duration_since(self.window_start) < Duration::from_secs(1)
        {
            return None;
        }
        Some(std::mem::take(&mut self.skipped))
    }

    /// Whether the occupancy changed since last announced and `interval` has passed since
    /// (marks it announced when it returns true).
    pub(crate) fn take_occupancy(&mut self, now: Instant, interval: Duration) -> bool {
        if self.total == self.announced {
            return false;
        }
        if self
            .announced_at
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return false;
        }
        self.announced = self.total;
        self.announced_at = Some(now);
        true
    }

    /// Whether something waits to be announced (occupancy or overflow).
    pub(crate) fn pending(&self) -> bool {
        self.total != self.announced || self.skipped > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, who: &str) -> Member {
        Member {
            id: MemberId(id),
            client_id: Arc::from(who),
            info: Bytes::new(),
        }
    }

    fn delta(count: i64, joins: Vec<Member>, leaves: Vec<u64>) -> PresenceDelta {
        PresenceDelta {
            reset: false,
            count,
            joins,
            leaves: leaves.into_iter().map(MemberId).collect(),
        }
    }

    #[test]
    fn roster_sums_sources_and_drops_a_source_whole() {
        let now = Instant::now();
        let mut r = Roster::new(now);
        let ch = r.apply(ShardId(0), delta(2, vec![m(5, "a")], vec![]), 10);
        assert_eq!(ch.events.len(), 1);
        r.apply(ShardId(1), delta(3, vec![m(7, "b"), m(9, "c")], vec![]), 10);
        assert_eq!(r.occupancy(), 5);
        assert_eq!(r.member_count(), 3);
        // A leave from the wrong source is ignored.
        let ch = r.apply(ShardId(0), delta(0, vec![], vec![7]), 10);
        assert!(ch.events.is_empty());
        let ch = r.drop_source(ShardId(1));
        assert_eq!(ch.events.len(), 2);
        assert!(ch.events.iter().all(|(a, _)| *a == PresenceAction::Leave));
        assert_eq!((r.occupancy(), r.member_count()), (2, 1));
        r.apply(ShardId(0), delta(-2, vec![], vec![5]), 10);
        assert!(r.is_empty());
    }

    #[test]
    fn roster_refuses_past_the_member_limit_and_pages_in_id_order() {
        let mut r = Roster::new(Instant::now());
        let joins: Vec<Member> = (1..=5).map(|i| m(i * 10, "x")).collect();
        let ch = r.apply(ShardId(0), delta(5, joins, vec![]), 4);
        assert_eq!(ch.refused.len(), 1);
        assert_eq!(ch.refused[0].id, MemberId(50));
        let q = |after, limit| PresenceQuery {
            members: true,
            after,
            limit,
        };
        let p1 = r.page(q(0, 3));
        let ids: Vec<u64> = p1.members.iter().map(|m| m.id.0).collect();
        assert_eq!(ids, vec![10, 20, 30]);
        assert_eq!(p1.next_after, 30);
        let p2 = r.page(q(p1.next_after, 3));
        assert_eq!(p2.members.len(), 1);
        assert_eq!(p2.next_after, 0);
        assert_eq!((p2.occupancy, p2.members_total), (5, 4));
        assert!(r.page(q(0, 0)).members.is_empty());
    }

    #[test]
    fn share_reset_becomes_a_difference() {
        let mut s = Share::default();
        s.apply(delta(3, vec![m(1, "a"), m(2, "b")], vec![]), 10);
        let d = s.apply(
            PresenceDelta {
                reset: true,
                count: 2,
                joins: vec![m(2, "b"), m(3, "c")],
                leaves: vec![],
            },
            10,
        );
        assert_eq!(d.count, -1);
        assert_eq!(d.leaves, vec![MemberId(1)]);
        assert_eq!(d.joins, vec![m(3, "c")]);
    }

    #[test]
    fn event_budget_and_occupancy_rate_limits() {
        let t0 = Instant::now();
        let mut r = Roster::new(t0);
        assert!(r.take_event_budget(t0, 2));
        assert!(r.take_event_budget(t0, 2));
        assert!(!r.take_event_budget(t0, 2));
        assert_eq!(r.take_overflow(t0), None, "not before the window ends");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.take_overflow(t1), Some(1));
        r.apply(ShardId(0), delta(1, vec![], vec![]), 10);
        let iv = Duration::from_millis(500);
        assert!(r.take_occupancy(t1, iv));
        r.apply(ShardId(0), delta(1, vec![], vec![]), 10);
        assert!(!r.take_occupancy(t1 + Duration::from_millis(100), iv));
        assert!(r.pending());
        assert!(r.take_occupancy(t1 + iv, iv));
        assert!(!r.pending());
    }
}
