//! Who is in the cluster: a node's gossip identity ([`Member`]), the live member set
//! ([`ClusterView`]), and what every shard of a clustered node shares ([`ClusterShared`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use fanfare_core::cluster::{NodeKey, NodeView};
use serde::{Deserialize, Serialize};

use super::config::{ClusterConfig, Roles};

/// One node as gossip knows it (its SWIM identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Cluster address (links and gossip).
    pub addr: SocketAddr,
    /// Roles.
    pub roles: Roles,
    /// Incarnation of the process: the start time in microseconds, so a restarted node wins
    /// over the identity it had before.
    pub generation: u64,
}

impl foca::Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        self.generation > other.generation
    }
}

/// The live members as one node sees them.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// This node.
    pub this: Option<Member>,
    /// Every live member, this node included, by id.
    pub members: Vec<Member>,
}

impl ClusterView {
    /// The engine's view: the storage nodes' keys.
    pub fn node_view(&self) -> NodeView {
        let mut storage: Vec<NodeKey> = self
            .members
            .iter()
            .filter(|m| m.roles.storage)
            .map(|m| NodeKey::of(&m.id))
            .collect();
        storage.sort_unstable();
        storage.dedup();
        NodeView {
            this: self
                .this
                .as_ref()
                .filter(|m| m.roles.storage)
                .map(|m| NodeKey::of(&m.id)),
            storage,
        }
    }

    /// The storage node `key`.
    pub fn storage_node(&self, key: NodeKey) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.roles.storage && NodeKey::of(&m.id) == key)
    }

    /// The cluster address of the storage node `key`.
    pub fn addr_of(&self, key: NodeKey) -> Option<SocketAddr> {
        self.storage_node(key).map(|m| m.addr)
    }

    /// As JSON for the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "this": self.this.as_ref().map(|m| &m.id),
            "members": self.members.iter().map(|m| serde_json::json!({
                "id": m.id,
                "addr": m.addr.to_string(),
                "router": m.roles.router,
                "storage": m.roles.storage,
                "generation": m.generation,
            })).collect::<Vec<_>>(),
        })
    }
}

/// What every shard of a clustered node shares.
pub(crate) struct ClusterShared {
    pub cfg: ClusterConfig,
    /// This node's identity (with the bound address).
    pub me: Member,
    /// Each shard's inbox of new views (index = shard id); shard 0 sends.
    pub views_tx: Vec<flume::Sender<Arc<ClusterView>>>,
    pub views_rx: Vec<flume::Receiver<Arc<ClusterView>>>,
    /// The latest view, for the admin API.
    pub latest: Mutex<Arc<ClusterView>>,
}

impl ClusterShared {
    pub fn new(cfg: ClusterConfig, me: Member, shards: usize) -> Self {
        let (views_tx, views_rx) = (0..shards).map(|_| flume::unbounded()).unzip();
        // A clustered node owns nothing until it has heard from the cluster (or waited
        // `membership::JOIN_GRACE`).
        let first = Arc::new(ClusterView {
            this: Some(me.clone()),
            members: Vec::new(),
        });
        ClusterShared {
            cfg,
            me,
            views_tx,
            views_rx,
            latest: Mutex::new(first),
        }
    }

    /// The latest view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes a new view to every shard.
    pub fn publish(&self, view: Arc<ClusterView>) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = view.clone();
        for tx in &self.views_tx {
            let _ = tx.send(view.clone());
        }
    }
}
