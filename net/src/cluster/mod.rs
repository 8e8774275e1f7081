//! Fanfare across nodes: membership (SWIM gossip through `foca`), the router side's links to
//! storage nodes, and the storage side's link server. See docs/cluster.md.
//!
//! - [`membership`] runs on shard 0 of every node: one UDP socket on the cluster address,
//!   `foca` driving the SWIM protocol (probes, indirect probes, suspicion, gossip). Each change
//!   of the live member set becomes a [`ClusterView`] sent to every shard.
//! - [`link`] is the router side: per shard, at most one TCP link per storage node, carrying
//!   the proto crate's `LinkMsg`s; it implements the engine's [`fanfare_core::cluster::Upstream`].
//! - [`server`] is the storage side: it accepts links and turns their requests into engine
//!   calls on this node (`publish_here`, `subscribe_here`, `fetch_here`); a link is one
//!   subscriber per topic, bounded like a client connection.

pub(crate) mod link;
pub(crate) mod membership;
pub(crate) mod server;
pub mod tls;
pub(crate) mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare_core::cluster::{NodeKey, NodeView};
use serde::{Deserialize, Serialize};

pub use tls::{GossipKey, LinkTls};

/// Node-link protocol version (the `LinkHello` exchange).
pub(crate) const LINK_VERSION: u16 = 1;

/// What a node does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Holds client connections and forwards to storage nodes.
    pub router: bool,
    /// Owns topics: orders, keeps history, serves links.
    pub storage: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            router: true,
            storage: true,
        }
    }
}

/// Cluster settings of a node. Without them ([`crate::ServerConfig::cluster`] `None`) a node
/// is a single node that owns every topic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster and stable across restarts (placement hashes it).
    pub node_id: String,
    /// Router, storage, or both (the default).
    pub roles: Roles,
    /// Where node links (TCP) and gossip (UDP) listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The address other nodes use for this one (default: `listen` with the bound port).
    pub advertise: Option<SocketAddr>,
    /// Nodes to join through (their cluster addresses); empty for the first node.
    pub seeds: Vec<SocketAddr>,
    /// SWIM probe period.
    pub probe_interval: Duration,
    /// How long a direct probe waits before indirect probes.
    pub probe_timeout: Duration,
    /// How long a suspected member has to refute before it is declared down.
    pub suspect_timeout: Duration,
    /// Router side: time to establish a link (TCP and hello) before trying again.
    pub link_connect_timeout: Duration,
    /// Storage side: bytes queued on one link before its subscriptions lag (skip, then catch
    /// up from history); a link that stays behind past the engine's `subscriber_lag_max` is
    /// closed (the router reconnects and catches up).
    pub link_queue_bytes_max: usize,
    /// Largest frame on a link, in bytes (the link is closed past it).
    pub link_frame_bytes_max: usize,
    /// Router side: publishes in flight on one link; past it a publish fails `Unavailable`.
    pub link_publishes_in_flight_max: usize,
    /// Storage side: subscribe positions being answered on one link; past it the request is
    /// refused `Overloaded`.
    pub link_fetches_in_flight_max: usize,
    /// Storage side: links served by the node (split evenly over shards); more are closed at
    /// once (a router needs one per shard, so the default fits 64 routers of 64 shards).
    pub link_connections_max: usize,
    /// Mutual TLS on node links: with it every link is TLS 1.3 and both ends must hold a
    /// certificate from the cluster CA naming their node id; plaintext links are refused.
    pub tls: Option<Arc<LinkTls>>,
    /// Authenticates gossip: datagrams without this key's tag are dropped.
    pub gossip_key: Option<GossipKey>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            roles: Roles::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise: None,
            seeds: Vec::new(),
            probe_interval: Duration::from_millis(1000),
            probe_timeout: Duration::from_millis(400),
            suspect_timeout: Duration::from_millis(3000),
            link_connect_timeout: Duration::from_secs(2),
            link_queue_bytes_max: 16 << 20,
            link_frame_bytes_max: 8 << 20,
            link_publishes_in_flight_max: 16_384,
            link_fetches_in_flight_max: 4096,
            link_connections_max: 4096,
            tls: None,
            gossip_key: None,
        }
    }
}

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
        let first = Arc::new(ClusterView {
            this: Some(me.clone()),
            members: vec![me.clone()],
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

/// Sets up one shard of a clustered node: the storage side's link listener, the router
/// side's links, the view updates, and (on shard 0) the gossip.
pub(crate) fn start_shard(
    shard: &fanfare_core::ShardHandle,
    cluster: Arc<ClusterShared>,
    stats: Arc<crate::metrics::NetStats>,
) -> std::io::Result<()> {
    let id = usize::from(shard.id().0);
    let cfg = Arc::new(cluster.cfg.clone());
    let node_id = cluster.me.id.clone();
    let first = cluster.view();
    shard.set_view(Arc::new(first.node_view()));
    if cfg.roles.storage {
        let listener = glommio::net::TcpListener::bind(cluster.me.addr)?;
        let srv = std::rc::Rc::new(server::LinkServer {
            links_max: cfg
                .link_connections_max
                .div_ceil(cluster.views_tx.len().max(1)),
            shard: shard.clone(),
            cfg: cfg.clone(),
            node_id: node_id.clone(),
            enc: std::rc::Rc::new(wire::Encoder::new(stats.clone())),
            stats: stats.clone(),
            refusal_log: wire::LogGate::default(),
        });
        glommio::spawn_local(server::accept_loop(listener, srv)).detach();
    }
    let links = cfg.roles.router.then(|| {
        let links = link::Links::new(
            shard.clone(),
            cfg.clone(),
            node_id.clone(),
            stats.clone(),
            first.clone(),
        );
        shard.set_upstream(links.clone());
        links
    });
    if let Some(rx) = cluster.views_rx.get(id).cloned() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Ok(mut view) = rx.recv_async().await {
                // Only the latest view matters.
                while let Ok(v) = rx.try_recv() {
                    view = v;
                }
                if let Some(l) = &links {
                    l.set_view(view.clone());
                }
                shard.set_view(Arc::new(view.node_view()));
            }
        })
        .detach();
    }
    if id == 0 {
        let sock = glommio::net::UdpSocket::bind(cluster.me.addr)?;
        let stop = shard.shutdown_signal();
        glommio::spawn_local(membership::run(cluster, sock, stats, stop)).detach();
    }
    Ok(())
}
