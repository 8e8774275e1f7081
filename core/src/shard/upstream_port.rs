//! [`UpstreamPort`]: the door to other nodes, owned by one part: the cluster view (who owns
//! which topic), the link to storage nodes the network crate provides, and the requests sent
//! up that wait for an answer. Without a view (a single node) every topic is this node's.
//!
//! Invariant: a request waits for at most one subscriber, and a subscriber has at most one
//! request waiting (its `req`; kept by the upstream role, `upstream.rs`).

use std::rc::Rc;

use ahash::AHashMap;

use crate::cluster::{NodeKey, SharedView, UpReq, Upstream};
use crate::ids::{SubId, TopicKey};
use crate::shard::local::{shrink_map, Home};

/// The door to other nodes (see the module docs).
#[derive(Default)]
pub(crate) struct UpstreamPort {
    /// The cluster view (None: a single node owns everything).
    view: Option<SharedView>,
    /// The way to other nodes (None: a single node).
    link: Option<Rc<dyn Upstream>>,
    /// Requests sent upstream, by id: the subscriber each answers (one per subscriber).
    reqs: AHashMap<u64, SubId>,
}

impl UpstreamPort {
    /// Whether this node is part of a cluster (it has a view).
    pub(crate) fn in_cluster(&self) -> bool {
        self.view.is_some()
    }

    /// Takes a new cluster view.
    pub(crate) fn set_view(&mut self, view: SharedView) {
        self.view = Some(view);
    }

    /// Takes the link to other nodes.
    pub(crate) fn set_link(&mut self, link: Rc<dyn Upstream>) {
        self.link = Some(link);
    }

    /// Where the owner of `key` is for a topic with `pinned` link subscriptions (served here
    /// whatever the view says).
    pub(crate) fn route(&self, key: &TopicKey, pinned: bool) -> Home {
        let Some(view) = &self.view else {
            return Home::Shard;
        };
        if pinned {
            return Home::Shard;
        }
        match view.owner(key) {
            None => Home::Nowhere,
            Some(n) if Some(n) == view.this => Home::Shard,
            Some(n) => Home::Node(n),
        }
    }

    /// Whether this node no longer owns `key` by the view (false for a single node).
    pub(crate) fn moved(&self, key: &TopicKey) -> bool {
        self.view
            .as_ref()
            .is_some_and(|v| v.this.is_none() || v.owner(key) != v.this)
    }

    /// Sends `req` to `node`; false without a link.
    pub(crate) fn send(&self, node: NodeKey, req: UpReq) -> bool {
        match &self.link {
            Some(up) => {
                up.send(node, req);
                true
            }
            None => false,
        }
    }

    /// Whether there is a link to other nodes.
    pub(crate) fn has_link(&self) -> bool {
        self.link.is_some()
    }

    /// Request `id` answers `sub`.
    pub(crate) fn wait(&mut self, id: u64, sub: SubId) {
        self.reqs.insert(id, sub);
    }

    /// Request `id` waits no more (superseded, or its subscriber left).
    pub(crate) fn forget(&mut self, id: u64) {
        self.reqs.remove(&id);
    }

    /// The answer to request `id` came: the subscriber it is for.
    pub(crate) fn answered(&mut self, id: u64) -> Option<SubId> {
        self.reqs.remove(&id)
    }

    /// Gives back what the map grew to in a burst.
    pub(crate) fn compact(&mut self) {
        shrink_map(&mut self.reqs);
    }
}
