//! What the crash test knows about each topic, and the checks of a read-back against it. No
//! I/O here: the wire side (`crash/wire.rs`) reports what publishers, live subscribers and
//! read-backs saw; this module says whether the broker kept its promises.
//!
//! A topic's model is a list indexed by sequence: what is known to be at each `(epoch, seq)`
//! (a message id) and how it became known: an acknowledgement named it, or a subscriber (live
//! or a read-back) received it. Once known, it must be there, with its exact payload, at every
//! later read-back.

use std::collections::HashSet;

use fanfare::proto::Durability;

use super::wire::Plan;

/// Every topic lives in this namespace.
pub const NAMESPACE: &str = "crash";

/// Failure descriptions kept for the report (the totals count them all).
const FAILURES_KEPT_MAX: usize = 40;

/// A message: which publisher of its topic sent it, and its counter there (0, 1, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Id {
    /// The publisher's index within its topic.
    pub publisher: u32,
    /// The publisher's counter.
    pub counter: u64,
}

/// The payload of message `id` of `topic`: its names in front, then a filler whose length
/// (0..=120) and content depend on them, so record lengths vary and a byte out of place shows.
pub fn payload(topic: &str, id: Id) -> Vec<u8> {
    let mut out = format!("{topic}|p{}|c{}|", id.publisher, id.counter).into_bytes();
    let mut h = mix(topic.len() as u64 ^ (u64::from(id.publisher) << 48) ^ id.counter);
    let len = (h % 121) as usize;
    for _ in 0..len {
        h = mix(h);
        out.push(b'a' + (h % 26) as u8);
    }
    out
}

/// The id a payload of `topic` names, if it is exactly what [`payload`] makes for that id.
pub fn parse(topic: &str, bytes: &[u8]) -> Result<Id, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "a payload that is not UTF-8".to_owned())?;
    let mut parts = text.splitn(4, '|');
    let (Some(t), Some(p), Some(c)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("a payload not made by the test: {text:.80}"));
    };
    if t != topic {
        return Err(format!("a payload of topic {t} in {topic}"));
    }
    let publisher = p.strip_prefix('p').and_then(|p| p.parse().ok());
    let counter = c.strip_prefix('c').and_then(|c| c.parse().ok());
    let (Some(publisher), Some(counter)) = (publisher, counter) else {
        return Err(format!("a payload not made by the test: {text:.80}"));
    };
    let id = Id { publisher, counter };
    if payload(topic, id) != bytes {
        return Err(format!("payload of {id:?} altered: {text:.80}"));
    }
    Ok(id)
}

/// SplitMix64's finaliser: the test's only source of pseudo-randomness (with [`Rng`]).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A seeded generator: a failing run replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = mix(self.0);
        lo + self.0 % (hi - lo + 1)
    }
}

/// What is known to be at one sequence, packed: a flag for known, for acknowledged, for
/// delivered (to a live subscriber or a read-back), the publisher and the counter.
#[derive(Clone, Copy, Default)]
struct Slot(u64);

impl Slot {
    const KNOWN: u64 = 1 << 63;
    const ACKED: u64 = 1 << 62;
    const DELIVERED: u64 = 1 << 61;
    const COUNTER_BITS: u32 = 40;

    fn id(self) -> Option<Id> {
        (self.0 & Self::KNOWN != 0).then_some(Id {
            publisher: ((self.0 >> Self::COUNTER_BITS) & 0xFF) as u32,
            counter: self.0 & ((1 << Self::COUNTER_BITS) - 1),
        })
    }

    fn with(id: Id, flags: u64) -> Slot {
        assert!(id.publisher < 256 && id.counter < 1 << Self::COUNTER_BITS);
        Slot(Self::KNOWN | flags | (u64::from(id.publisher) << Self::COUNTER_BITS) | id.counter)
    }
}

/// The counts a run reports; every one but `acked`, `unacked_kept` and `cycles` must be 0.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Restarts (each after a SIGTERM or a kill -9).
    pub cycles: u64,
    /// Of them, after kill -9.
    pub kills: u64,
    /// Publishes acknowledged.
    pub acked: u64,
    /// Publishes in flight at a stop (never answered) found stored later.
    pub unacked_kept: u64,
    /// Acknowledged publishes not at their `(epoch, seq)` in a read-back.
    pub lost: u64,
    /// Messages a subscriber received that a later read-back no longer had there.
    pub delivered_lost: u64,
    /// Topics found in another epoch than the one they had.
    pub epoch_changes: u64,
    /// Discontinuities announced, or gaps in a sequence a subscriber received.
    pub discontinuities: u64,
    /// A message stored twice.
    pub duplicates: u64,
    /// Anything else that broke a promise: a payload altered or never sent, two messages
    /// named at one sequence, a refused publish stored, an ack not `synced`, a read-back that
    /// failed.
    pub other: u64,
}

impl Totals {
    /// Broken promises, all kinds together.
    pub fn broken(&self) -> u64 {
        self.lost
            + self.delivered_lost
            + self.epoch_changes
            + self.discontinuities
            + self.duplicates
            + self.other
    }

    /// Whether every promise held.
    pub fn clean(&self) -> bool {
        self.broken() == 0
    }
}

/// Totals and the first failures, described.
#[derive(Default)]
pub struct Verdict {
    /// The counts.
    pub totals: Totals,
    /// The first failures, described.
    pub failures: Vec<String>,
}

impl Verdict {
    /// Records a failure counted in `count`.
    pub fn fail(&mut self, count: fn(&mut Totals) -> &mut u64, what: String) {
        *count(&mut self.totals) += 1;
        if self.failures.len() < FAILURES_KEPT_MAX {
            self.failures.push(what);
        }
    }
}

/// What one read-back from `(epoch, 1)` found: the topic's epoch and last sequence (from a
/// subscription at its latest position), every item received, and any discontinuity.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// The epoch the topic is in now.
    pub epoch: u64,
    /// Its last sequence (0: empty).
    pub head: u64,
    /// `(epoch, seq, id)` as received; no id when the payload is not one the test made.
    pub items: Vec<(u64, u64, Option<Id>)>,
    /// Discontinuities announced, described.
    pub problems: Vec<String>,
    /// Payloads the test did not make (altered), described.
    pub corrupt: Vec<String>,
}

/// One topic's model.
pub struct Topic {
    /// Its name in [`NAMESPACE`].
    pub name: String,
    /// Its epoch, once a message was stored.
    pub epoch: Option<u64>,
    slots: Vec<Slot>,
    /// Per publisher: the counters sent so far (`0..sent`), those refused (until sent again),
    /// and those to send again (unanswered, or refused for now).
    sent: Vec<u64>,
    refused: Vec<HashSet<u64>>,
    pending: Vec<Vec<u64>>,
    /// Where the live subscriber resumes: `(epoch, next seq)`.
    pub live_from: Option<(u64, u64)>,
}

impl Topic {
    /// A topic with `publishers` publishers and nothing sent.
    pub fn new(name: String, publishers: usize) -> Topic {
        Topic {
            name,
            epoch: None,
            slots: Vec::new(),
            sent: vec![0; publishers],
            refused: vec![HashSet::new(); publishers],
            pending: vec![Vec::new(); publishers],
            live_from: None,
        }
    }

    /// What publisher `p` sends next: with `keyed` (idempotency keys), its unanswered
    /// publishes again first (a retry must land once); without, only new ones.
    pub fn plan(&mut self, p: usize, keyed: bool, durability: Durability) -> Plan {
        let retry = std::mem::take(&mut self.pending[p]);
        let retry = if keyed { retry } else { Vec::new() };
        for c in &retry {
            self.refused[p].remove(c);
        }
        Plan {
            retry,
            first: self.sent[p],
            keyed,
            durability,
        }
    }

    /// Publisher `p` got no answer for `counters`, or was refused for now: sent again later.
    pub fn unanswered(&mut self, p: usize, counters: &[u64]) {
        self.pending[p] = counters.to_vec();
    }

    /// Publisher `p` sent counters up to `upto` (exclusive).
    pub fn sent(&mut self, p: usize, upto: u64) {
        self.sent[p] = self.sent[p].max(upto);
    }

    /// Publisher `p`'s `counter` was refused with an error.
    pub fn refused(&mut self, p: usize, counter: u64) {
        self.refused[p].insert(counter);
    }

    fn check_epoch(&mut self, epoch: u64, what: &str, v: &mut Verdict) -> bool {
        match self.epoch {
            None => {
                self.epoch = Some(epoch);
                true
            }
            Some(e) if e == epoch => true,
            Some(e) => {
                v.fail(
                    |t| &mut t.epoch_changes,
                    format!("{}: {what} in epoch {epoch}, the topic had {e}", self.name),
                );
                false
            }
        }
    }

    /// Records that `id` is at `seq` (an ack or a delivery said so, `flag` which).
    fn place(&mut self, seq: u64, id: Id, flag: u64, what: &str, v: &mut Verdict) {
        assert!(seq >= 1, "sequences start at 1");
        let i = (seq - 1) as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, Slot::default());
        }
        let s = self.slots[i];
        match s.id() {
            Some(known) if known != id => v.fail(
                |t| &mut t.other,
                format!(
                    "{}: {what} {id:?} at seq {seq}, where {known:?} was known",
                    self.name
                ),
            ),
            Some(_) => self.slots[i] = Slot(s.0 | flag),
            None => self.slots[i] = Slot::with(id, flag),
        }
    }

    /// Publisher `p`'s `counter` was acknowledged at `(epoch, seq)`.
    pub fn acked(&mut self, p: usize, counter: u64, epoch: u64, seq: u64, v: &mut Verdict) {
        v.totals.acked += 1;
        let id = Id {
            publisher: p as u32,
            counter,
        };
        if self.check_epoch(epoch, "an ack", v) {
            self.place(seq, id, Slot::ACKED, "ack of", v);
        }
    }

    /// A live subscriber, subscribed at `from` (`(epoch, next seq)`, as the broker answered;
    /// where the previous one stopped, if there was one), received `items` (and announced
    /// `discontinuities`).
    pub fn delivered(
        &mut self,
        from: (u64, u64),
        items: &[(u64, u64, bytes::Bytes)],
        discontinuities: &[String],
        v: &mut Verdict,
    ) {
        for d in discontinuities {
            v.fail(
                |t| &mut t.discontinuities,
                format!("{}: live: {d}", self.name),
            );
        }
        if let Some(asked) = self.live_from.filter(|&a| a != from) {
            v.fail(
                |t| &mut t.discontinuities,
                format!(
                    "{}: live: resumed at {asked:?}, subscribed at {from:?}",
                    self.name
                ),
            );
        }
        if self.epoch.is_some() {
            self.check_epoch(from.0, "a live subscription", v);
        }
        let mut next = from;
        for (epoch, seq, payload) in items {
            if (*epoch, *seq) != next {
                v.fail(
                    |t| &mut t.discontinuities,
                    format!(
                        "{}: live: {epoch}-{seq} received after {}-{}",
                        self.name,
                        next.0,
                        next.1 - 1
                    ),
                );
            }
            next = (*epoch, seq + 1);
            if !self.check_epoch(*epoch, "a live item", v) {
                continue;
            }
            match parse(&self.name, payload) {
                Ok(id) => self.place(*seq, id, Slot::DELIVERED, "live delivery of", v),
                Err(e) => v.fail(|t| &mut t.other, format!("{}: live: {e}", self.name)),
            }
        }
        self.live_from = Some(next);
    }

    /// Checks a read-back from `(epoch, 1)` against everything known: every known message is
    /// at its sequence with its payload, nothing is there twice, nothing is missing in
    /// between, the epoch is the same; what it shows is known from then on.
    pub fn read_back(&mut self, rb: &ReadBack, v: &mut Verdict) {
        for p in &rb.problems {
            v.fail(
                |t| &mut t.discontinuities,
                format!("{}: read-back: {p}", self.name),
            );
        }
        for c in &rb.corrupt {
            v.fail(|t| &mut t.other, format!("{}: read-back: {c}", self.name));
        }
        if rb.head == 0 && self.slots.iter().all(|s| s.id().is_none()) {
            // Nothing was ever stored or seen: the topic starts afresh, in any epoch.
            self.epoch = None;
            self.live_from = None;
            self.slots.clear();
            return;
        }
        let same_epoch = self.check_epoch(rb.epoch, "the read-back", v);
        let mut got: Vec<Option<Id>> = vec![None; rb.head as usize];
        let mut seen: Vec<HashSet<u64>> = vec![HashSet::new(); self.sent.len()];
        let mut expect = 1;
        for &(epoch, seq, id) in &rb.items {
            if epoch != rb.epoch || seq != expect {
                v.fail(
                    |t| &mut t.discontinuities,
                    format!(
                        "{}: read-back: {epoch}-{seq} after {}-{}",
                        self.name,
                        rb.epoch,
                        expect - 1
                    ),
                );
            }
            expect = seq + 1;
            let Some(id) = id else { continue };
            let p = id.publisher as usize;
            if p >= self.sent.len() || id.counter >= self.sent[p] {
                v.fail(
                    |t| &mut t.other,
                    format!("{}: {id:?} at seq {seq} was never sent", self.name),
                );
                continue;
            }
            if !seen[p].insert(id.counter) {
                v.fail(
                    |t| &mut t.duplicates,
                    format!("{}: {id:?} stored twice (again at seq {seq})", self.name),
                );
            }
            if self.refused[p].contains(&id.counter) {
                v.fail(
                    |t| &mut t.other,
                    format!("{}: {id:?} was refused, yet stored at {seq}", self.name),
                );
            }
            if let Some(g) = got.get_mut((seq as usize).wrapping_sub(1)) {
                *g = Some(id);
            }
        }
        if let Some(hole) = got.iter().position(Option::is_none) {
            v.fail(
                |t| &mut t.discontinuities,
                format!(
                    "{}: read-back of {} messages lacks seq {}",
                    self.name,
                    rb.head,
                    hole + 1
                ),
            );
        }
        // Everything known must be where it was.
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(known) = s.id() else { continue };
            let there = if same_epoch {
                got.get(i).copied()
            } else {
                None
            };
            if there.flatten() == Some(known) {
                continue;
            }
            let what = match there.flatten() {
                Some(other) => format!("{other:?} is there"),
                None => format!("the topic ends at {}-{}", rb.epoch, rb.head),
            };
            let seq = i + 1;
            if s.0 & Slot::ACKED != 0 {
                v.fail(
                    |t| &mut t.lost,
                    format!(
                        "{}: acknowledged {known:?} at seq {seq} lost: {what}",
                        self.name
                    ),
                );
            } else {
                v.fail(
                    |t| &mut t.delivered_lost,
                    format!(
                        "{}: delivered {known:?} at seq {seq} lost: {what}",
                        self.name
                    ),
                );
            }
        }
        // Each loss is counted once: from now on the model holds what is there, and what
        // the read-back showed was delivered: it must stay.
        let old = std::mem::take(&mut self.slots);
        if !same_epoch {
            self.epoch = Some(rb.epoch);
        }
        for (i, id) in got.into_iter().enumerate() {
            let prev = old.get(i).copied().unwrap_or_default();
            self.slots.push(match (id, prev.id()) {
                (Some(id), Some(k)) if k == id => Slot(prev.0 | Slot::DELIVERED),
                (Some(id), None) => {
                    v.totals.unacked_kept += 1;
                    Slot::with(id, Slot::DELIVERED)
                }
                (Some(id), Some(_)) => Slot::with(id, Slot::DELIVERED),
                (None, _) => Slot::default(),
            });
        }
    }
}
