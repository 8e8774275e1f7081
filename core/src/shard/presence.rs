//! The presence role (see [`crate::presence`]): each shard sends the changes of what its
//! subscribers hold for a topic to the topic's owner, the owner keeps the topic's
//! [`Roster`] and announces joins, leaves and occupancy back down, rate-limited, and answers
//! presence queries.

use std::time::Instant;

use crate::cluster::UpReq;
use crate::ids::{ShardId, SubId, TopicKey};
use crate::message::SubscribeError;
use crate::presence::{
    Changes, Member, MemberId, PresenceAction, PresenceDelta, PresenceEvent, PresenceOptions,
    PresenceQuery, PresenceState, Roster, Share, SubPresence,
};
use crate::shard::local::{Home, Phase, Subscriber};
use crate::shard::mesh::MeshMsg;
use crate::shard::state::State;
use crate::sink::Offer;
use crate::stats::ShardStats;

/// A query on its way: answered here, or waiting for the owner.
pub(crate) enum QueryStarted {
    Done(PresenceState),
    Waiting(flume::Receiver<Result<PresenceState, SubscribeError>>),
}

impl Subscriber {
    /// What this subscription adds to its topic's presence.
    pub(crate) fn share_delta(&self) -> PresenceDelta {
        let p = self.presence.as_deref();
        if self.pinned {
            let Some(r) = p.and_then(|p| p.remote.as_ref()) else {
                return PresenceDelta::default();
            };
            return PresenceDelta {
                reset: false,
                count: r.count as i64,
                joins: r.members.values().cloned().collect(),
                leaves: Vec::new(),
            };
        }
        PresenceDelta {
            reset: false,
            count: 1,
            joins: p.and_then(|p| p.member.clone()).into_iter().collect(),
            leaves: Vec::new(),
        }
    }

    /// The delta that takes this subscription's share away.
    pub(crate) fn removal_delta(&self) -> PresenceDelta {
        let add = self.share_delta();
        PresenceDelta {
            reset: false,
            count: -add.count,
            joins: Vec::new(),
            leaves: add.joins.into_iter().map(|m| m.id).collect(),
        }
    }
}

impl State {
    /// The presence state of a new subscription (`None` when it asked for nothing).
    pub(crate) fn sub_presence(&mut self, opts: PresenceOptions) -> Option<Box<SubPresence>> {
        if !opts.any() {
            return None;
        }
        let member = opts.enter.map(|(client_id, info)| {
            let id = self.fresh_member_id();
            Member {
                id: MemberId(id),
                client_id,
                info,
            }
        });
        Some(Box::new(SubPresence {
            member,
            member_events: opts.member_events,
            occupancy_events: opts.occupancy_events,
            remote: None,
            refused: false,
        }))
    }

    /// Sends a change of this shard's share of `key` to the topic's owner.
    pub(crate) fn presence_up(&mut self, key: &TopicKey, delta: PresenceDelta, now: Instant) {
        if delta.is_empty() {
            return;
        }
        let Some(lt) = self.local.topic(key) else {
            return;
        };
        match lt.home {
            Home::Shard => {
                let owner = self.owner_of(key);
                if owner == self.id {
                    self.owner_presence(key, owner, delta, now);
                } else {
                    let from = self.id;
                    let key = key.clone();
                    self.send(owner, MeshMsg::Presence { key, from, delta });
                }
            }
            Home::Node(node) => {
                let key = key.clone();
                self.up.send(node, UpReq::Presence { key, delta });
            }
            // Sent whole (a reset) once the topic has a home again.
            Home::Nowhere => {}
        }
    }

    /// Sends this shard's whole share of `key` to the topic's owner, replacing what it held
    /// there (after an owner change or a link reconnect).
    pub(crate) fn presence_resync(&mut self, key: &TopicKey, now: Instant) {
        let Some(lt) = self.local.topic(key) else {
            return;
        };
        let mut all = PresenceDelta {
            reset: true,
            ..PresenceDelta::default()
        };
        for s in lt.subs() {
            let d = s.share_delta();
            all.count += d.count;
            all.joins.extend(d.joins);
        }
        self.presence_up(key, all, now);
    }

    /// A node link's report of what its router shard holds for the topic of `sub`.
    pub(crate) fn link_presence(&mut self, sub: SubId, delta: PresenceDelta, now: Instant) {
        let max = self.cfg.presence_members_max;
        let Some(key) = self.local.key_of(sub).cloned() else {
            return;
        };
        let Some(s) = self.local.sub_mut(sub) else {
            return;
        };
        if !s.pinned {
            return;
        }
        let p = s.presence.get_or_insert_with(Default::default);
        let d = p
            .remote
            .get_or_insert_with(Share::default)
            .apply(delta, max);
        self.presence_up(&key, d, now);
    }

    /// Hands a presence event of `key` to the local subscribers that asked for it.
    pub(crate) fn deliver_presence(&mut self, key: &TopicKey, ev: &PresenceEvent) {
        let Some(lt) = self.local.topic_mut(key) else {
            return;
        };
        let target = ev.member.as_ref().map(|m| m.id);
        for s in lt.subs_mut() {
            if s.pinned {
                s.sink.offer(s.id, Offer::Presence(ev));
                continue;
            }
            let pending = s.phase() == Phase::Pending;
            let Some(p) = s.presence.as_deref_mut() else {
                continue;
            };
            let wants = match ev.action {
                PresenceAction::Join | PresenceAction::Leave | PresenceAction::Overflow => {
                    p.member_events
                }
                PresenceAction::Occupancy => p.occupancy_events,
                PresenceAction::Refused => {
                    let mine = p.member.as_ref().map(|m| m.id) == target;
                    if mine && pending {
                        p.refused = true;
                        continue;
                    }
                    mine
                }
            };
            if wants && !pending {
                s.sink.offer(s.id, Offer::Presence(ev));
            }
        }
    }

    /// Starts a presence query of `key` (`here`: on this node whatever the view says).
    pub(crate) fn presence_query(
        &mut self,
        key: TopicKey,
        mut q: PresenceQuery,
        here: bool,
    ) -> Result<QueryStarted, SubscribeError> {
        if self.closing {
            return Err(SubscribeError::ShuttingDown);
        }
        q.limit = q.limit.min(self.cfg.presence_page_max);
        let pinned = here || self.local.topic(&key).is_some_and(|t| t.pinned() > 0);
        match self.route(&key, pinned) {
            Home::Shard => {}
            Home::Nowhere => return Err(SubscribeError::Unavailable),
            Home::Node(node) => {
                if !self.up.has_link() {
                    return Err(SubscribeError::Unavailable);
                }
                let (reply, rx) = flume::bounded(1);
                self.up.send(node, UpReq::PresenceQuery { key, q, reply });
                return Ok(QueryStarted::Waiting(rx));
            }
        }
        let owner = self.owner_of(&key);
        if owner == self.id {
            return Ok(QueryStarted::Done(self.owner_presence_state(&key, q)));
        }
        let (reply, rx) = flume::bounded(1);
        self.send(owner, MeshMsg::PresenceQuery { key, q, reply });
        Ok(QueryStarted::Waiting(rx))
    }

    // ---------------------------------------------------------------- owner side

    /// The owner's answer to a presence query (an unknown topic has nobody).
    pub(crate) fn owner_presence_state(
        &mut self,
        key: &TopicKey,
        q: PresenceQuery,
    ) -> PresenceState {
        ShardStats::inc(&self.stats.presence_queries);
        self.owned
            .get(key)
            .and_then(|t| t.roster.as_ref())
            .map(|r| r.page(q))
            .unwrap_or_default()
    }

    /// Applies a change of source `from`'s share of an owned topic and announces it.
    pub(crate) fn owner_presence(
        &mut self,
        key: &TopicKey,
        from: ShardId,
        delta: PresenceDelta,
        now: Instant,
    ) {
        let max = self.cfg.presence_members_max;
        let Some(t) = self.owned_topic(key) else {
            return; // at the topic limit: the subscribers were refused too
        };
        let roster = t.roster.get_or_insert_with(|| Box::new(Roster::new(now)));
        let before = roster.member_count();
        let ch = roster.apply(from, delta, max);
        let after = roster.member_count();
        self.count_members(before, after);
        self.announce(key, ch, now);
    }

    /// Keeps the `presence_members` gauge (members listed on owned topics).
    fn count_members(&self, before: usize, after: usize) {
        let g = &self.stats.presence_members;
        let now = g.load(std::sync::atomic::Ordering::Relaxed);
        ShardStats::set(g, (now + after as u64).saturating_sub(before as u64));
    }

    /// Source `from` has nothing of `key` any more.
    pub(crate) fn owner_presence_drop(&mut self, key: &TopicKey, from: ShardId, now: Instant) {
        let Some(r) = self.owned.get_mut(key).and_then(|t| t.roster.as_mut()) else {
            return;
        };
        let before = r.member_count();
        let ch = r.drop_source(from);
        let after = r.member_count();
        self.count_members(before, after);
        self.announce(key, ch, now);
    }

    /// Sends the events of `ch` (within the rate limit) and a due occupancy event to every
    /// shard with subscribers of `key`.
    fn announce(&mut self, key: &TopicKey, ch: Changes, now: Instant) {
        let per_second = self.cfg.presence_events_per_second;
        let Some(t) = self.owned.get_mut(key) else {
            return;
        };
        let Some(roster) = t.roster.as_mut() else {
            return;
        };
        let occupancy = roster.occupancy();
        let mut events = Vec::new();
        let (mut joins, mut leaves, mut skipped) = (0, 0, 0);
        for (action, m) in ch.events {
            if action == PresenceAction::Join {
                joins += 1;
            } else {
                leaves += 1;
            }
            if roster.take_event_budget(now, per_second) {
                events.push(PresenceEvent {
                    action,
                    member: Some(m),
                    occupancy,
                    skipped: 0,
                });
            } else {
                skipped += 1;
            }
        }
        let refused = ch.refused.len() as u64;
        events.extend(ch.refused.into_iter().map(|m| PresenceEvent {
            action: PresenceAction::Refused,
            member: Some(m),
            occupancy,
            skipped: 0,
        }));
        let s = &self.stats;
        ShardStats::add(&s.presence_joins, joins);
        ShardStats::add(&s.presence_leaves, leaves);
        ShardStats::add(&s.presence_refused, refused);
        ShardStats::add(&s.presence_events_skipped, skipped);
        self.settle_presence(key, events, now, false);
    }

    /// Adds what the rate limits let go now (an overflow count when `overflow`, a due
    /// occupancy), remembers the topic if more is held back, drops an empty roster, and sends
    /// `events` to every shard with subscribers.
    fn settle_presence(
        &mut self,
        key: &TopicKey,
        mut events: Vec<PresenceEvent>,
        now: Instant,
        overflow: bool,
    ) {
        let interval = self.cfg.occupancy_interval;
        let Some(t) = self.owned.get_mut(key) else {
            return;
        };
        let Some(roster) = t.roster.as_mut() else {
            return;
        };
        let occupancy = roster.occupancy();
        if let Some(skipped) = overflow.then(|| roster.take_overflow(now)).flatten() {
            events.push(PresenceEvent {
                action: PresenceAction::Overflow,
                member: None,
                occupancy,
                skipped,
            });
        }
        if roster.take_occupancy(now, interval) {
            events.push(PresenceEvent {
                action: PresenceAction::Occupancy,
                member: None,
                occupancy,
                skipped: 0,
            });
        }
        let pending = roster.pending();
        if roster.is_empty() && !pending {
            t.roster = None;
        }
        let targets = t.interested().to_vec();
        if pending {
            self.owned.hold_presence(key);
        }
        self.broadcast_presence(key, &targets, events);
    }

    fn broadcast_presence(
        &mut self,
        key: &TopicKey,
        targets: &[ShardId],
        events: Vec<PresenceEvent>,
    ) {
        ShardStats::add(&self.stats.presence_events, events.len() as u64);
        for ev in events {
            for &to in targets {
                if to == self.id {
                    self.deliver_presence(key, &ev);
                } else {
                    let (key, event) = (key.clone(), ev.clone());
                    self.send(to, MeshMsg::PresenceEvent { key, event });
                }
            }
        }
    }

    /// Announces what the rate limits held back: overflow counts once their window ended,
    /// occupancy once its interval passed (run by the tick).
    pub(crate) fn presence_tick(&mut self, now: Instant) {
        for key in self.owned.take_held_presence() {
            self.settle_presence(&key, Vec::new(), now, true);
        }
    }
}
