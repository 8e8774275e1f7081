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

pub(crate) mod config;
pub(crate) mod link;
pub(crate) mod membership;
pub(crate) mod server;
pub mod tls;
pub(crate) mod view;
pub(crate) mod wire;

use std::sync::Arc;

use fanfare_core::TaskKind;

pub use config::{ClusterConfig, Roles};
pub use tls::{GossipKey, LinkTls};
pub(crate) use view::ClusterShared;
pub use view::{ClusterView, Member};

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
    let port = fanfare_core::ClusterPort::of(shard);
    port.set_view(Arc::new(first.node_view()));
    let server = if cfg.roles.storage {
        let listener = crate::ports::Listener::bind(cluster.me.addr)?;
        let srv = std::rc::Rc::new(server::LinkServer {
            links_max: cfg
                .link_connections_max
                .div_ceil(cluster.views_tx.len().max(1)),
            shard: port.clone(),
            cfg: cfg.clone(),
            node_id: node_id.clone(),
            enc: std::rc::Rc::new(wire::Encoder::new(stats.clone())),
            stats: stats.clone(),
            refusal_log: wire::LogGate::default(),
            conns: Default::default(),
            alive: std::cell::RefCell::new(first.members.iter().map(|m| m.id.clone()).collect()),
        });
        shard
            .tasks()
            .spawn(
                TaskKind::LinkAccept,
                server::accept_loop(listener, srv.clone()),
            )
            .detach();
        Some(srv)
    } else {
        None
    };
    let links = cfg.roles.router.then(|| {
        let links = link::Links::new(
            port.clone(),
            cfg.clone(),
            node_id.clone(),
            stats.clone(),
            first.clone(),
        );
        port.set_upstream(links.clone());
        links
    });
    if let Some(rx) = cluster.views_rx.get(id).cloned() {
        let port = port.clone();
        let views = async move {
            while let Ok(mut view) = rx.recv_async().await {
                // Only the latest view matters.
                while let Ok(v) = rx.try_recv() {
                    view = v;
                }
                if let Some(l) = &links {
                    l.set_view(view.clone());
                }
                if let Some(srv) = &server {
                    srv.set_view(&view);
                }
                port.set_view(Arc::new(view.node_view()));
            }
        };
        shard
            .tasks()
            .spawn(TaskKind::MembershipWork, views)
            .detach();
    }
    if id == 0 {
        // glommio's bind (SO_REUSEPORT, no SO_REUSEADDR) is right for UDP: nothing like
        // TIME-WAIT holds a UDP port after its socket closes, and on UDP SO_REUSEADDR would
        // let a socket of any user that sets it share the port. `ports::reserve` already
        // refused a port whose TCP side another live node listens on.
        let sock = glommio::net::UdpSocket::bind(cluster.me.addr)?;
        let stop = shard.shutdown_signal();
        let tasks = shard.tasks();
        let gossip = membership::run(cluster, sock, stats, stop, tasks.clone());
        tasks.spawn(TaskKind::Membership, gossip).detach();
    }
    Ok(())
}
