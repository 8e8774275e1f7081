//! What a clustered node is configured with: its roles and [`ClusterConfig`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tls::{GossipKey, LinkTls};

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
