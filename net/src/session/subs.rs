//! A connection's subscriptions by engine id ([`Subs`]).

use fanfare_core::{SubId, TopicKey};

/// One subscription of a connection: its id on the wire, the request that made it, its topic.
pub(crate) struct SubEntry {
    pub wire: u64,
    pub request_id: u64,
    pub topic: TopicKey,
}

/// A connection's subscriptions. Most connections have one or a few, so a vector sized to fit
/// (no hash table, no hasher state: part of what an idle connection costs, docs/ARCHITECTURE.md);
/// lookups are linear, bounded by `subscriptions_per_connection_max`, and off the item path.
#[derive(Default)]
pub(crate) struct Subs(Vec<(SubId, SubEntry)>);

impl Subs {
    pub(crate) fn insert(&mut self, id: SubId, e: SubEntry) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == id) {
            slot.1 = e;
            return;
        }
        if self.0.len() == self.0.capacity() && self.0.len() < 4 {
            self.0.reserve_exact(1);
        }
        self.0.push((id, e));
    }

    pub(crate) fn get(&self, id: &SubId) -> Option<&SubEntry> {
        self.0.iter().find(|(k, _)| k == id).map(|(_, e)| e)
    }

    pub(crate) fn remove(&mut self, id: &SubId) -> Option<SubEntry> {
        let i = self.0.iter().position(|(k, _)| k == id)?;
        Some(self.0.swap_remove(i).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&SubId, &SubEntry)> {
        self.0.iter().map(|(k, e)| (k, e))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &SubEntry> {
        self.0.iter().map(|(_, e)| e)
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (SubId, SubEntry)> + '_ {
        self.0.drain(..)
    }
}
