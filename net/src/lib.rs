//! Fanfare's network front: one port for WebSocket and HTTP, over the engine's shards.
//!
//! [`start`] runs a [`fanfare_core::Broker`] whose every shard binds the same address
//! (SO_REUSEPORT: the kernel spreads connections over the shards) and owns the connections
//! it accepts. The first bytes of a connection decide what it is:
//!
//! - TLS (a first byte of 22) when a certificate is configured, then by ALPN;
//! - HTTP/2 when the bytes open with its preface;
//! - otherwise HTTP/1.1: `GET /v1/ws` with an upgrade becomes a WebSocket session, binary
//!   frames each holding one flatbuffers `ClientMessage` / `ServerMessage` (see
//!   docs/protocol.md); every other request goes through the HTTP API's route table, which
//!   HTTP/2 shares: `POST /v1/topics/{ns}/{topic}` publishes, `GET /v1/topics/{ns}/{topic}`
//!   streams a subscription as Server-Sent Events or length-prefixed frames, `GET /healthz`,
//!   `GET /metrics`, `GET /v1/admin/...`.
//!
//! Fan-out is zero-copy up to the socket: a message reaching a shard is encoded once per
//! wire encoding ([`fanfare_core::Delivery::encoded`]) and the same buffer is queued on every
//! connection; each connection's task coalesces everything queued into one write.
//!
//! Modules call only downward: `listener` -> `transport` -> `api` -> `session` -> `access`
//! -> `ctx` -> `config` -> (`cluster`, `auth`); `metrics`, `hub`, `auth`, `presence`,
//! `moment`, `memory`, `slots`, `ports` and `error` import nothing of the crate, and `io` (-> `metrics`)
//! and `tls` (-> `error`) only them: the ground everything stands on (docs/ARCHITECTURE.md).
#![warn(missing_docs)]
#![deny(unsafe_code)]
// Non-test code handles failures instead of panicking (issue 30); an invariant that cannot
// fail is allowed on its smallest scope, with the reason next to it.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod access;
mod api;
pub mod auth;
pub mod cluster;
mod config;
mod ctx;
mod error;
mod hub;
mod io;
mod listener;
mod memory;
pub mod metrics;
mod moment;
mod ports;
mod presence;
mod session;
mod slots;
mod tls;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fanfare_core::{Broker, ShardHandle};

pub use config::{Limits, ServerConfig};
pub use error::ServeError;
pub use metrics::Registry;
pub use tls::{tls_config, tls_from_pem};
pub use transport::ws::SUBPROTOCOL;

/// Room a client message needs around its payload: the largest `Publish` envelope is about
/// 360 bytes (two 64-byte names, a 128-byte idempotency key, ids, flatbuffers tables and
/// padding). The largest message plus this must fit in `frame_bytes_max`.
pub const ENVELOPE_BYTES_MAX: usize = 512;

/// A running server.
pub struct Server {
    broker: Broker,
    addr: SocketAddr,
    registry: Arc<Registry>,
    cluster_addr: Option<SocketAddr>,
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address node links and gossip use (in a cluster).
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// The engine, for publishing and subscribing in process.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Counters of every shard.
    pub fn metrics(&self) -> &Registry {
        &self.registry
    }

    /// Graceful stop: stop accepting, close WebSocket sessions with 1001 and end HTTP streams
    /// after their queues are sent (up to the engine's `drain_timeout`), then stop the shards.
    pub fn shutdown(&self) {
        self.broker.shutdown();
    }
}

/// Starts a node serving on `cfg.listen`; returns once every shard listens.
pub fn start(cfg: ServerConfig) -> Result<Server, ServeError> {
    let ServerConfig {
        listen,
        limits,
        engine,
        tls,
        auth,
        cluster,
    } = cfg;
    let auth = Arc::new(auth::Auth::new(auth).map_err(ServeError::Auth)?);
    // Reserve the address (and learn the port when 0 was asked) with a socket that is bound
    // but never listens, so it receives no connections; each shard then binds the same port.
    let reserve = ports::reserve(listen).map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let addr = reserve
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| ServeError::Bind {
            addr: listen,
            source: std::io::Error::other("no local address"),
        })?;
    // A WebSocket frame must hold the largest message and its envelope (names, ids).
    if engine.message_bytes_max.saturating_add(ENVELOPE_BYTES_MAX) > limits.frame_bytes_max {
        return Err(ServeError::Config(format!(
            "message_bytes_max ({}) plus {ENVELOPE_BYTES_MAX} bytes of envelope is over \
             frame_bytes_max ({}): a client could not send the largest message; raise \
             frame_bytes_max or lower message_bytes_max",
            engine.message_bytes_max, limits.frame_bytes_max
        )));
    }
    let shards = engine.shard_count();
    let registry = Arc::new(Registry::new(shards, cluster.is_some()));
    let admin = Arc::new(hub::AdminHub::new(shards));
    let (cluster, cluster_reserve) = match cluster {
        None => (None, None),
        Some(c) => {
            let (shared, reserve) = cluster_shared(c, shards)?;
            (Some(shared), Some(reserve))
        }
    };
    let cluster_addr = cluster.as_ref().map(|c| c.me.addr);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
    let hook = {
        let node = listener::NodeShared {
            addr,
            limits: Arc::new(limits),
            registry: registry.clone(),
            shards,
            tls,
            auth,
            admin,
            cluster,
        };
        let bound_tx = std::sync::Mutex::new(bound_tx);
        move |h: ShardHandle| {
            let r = listener::serve_shard(h, node.clone());
            let tx = bound_tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let _ = tx.send(r);
        }
    };
    let broker = Broker::builder()
        .config(engine)
        .on_shard_start(hook)
        .start()?;
    for _ in 0..shards {
        let r = bound_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| Err(std::io::Error::other("a shard did not report its listener")));
        if let Err(source) = r {
            broker.shutdown();
            return Err(ServeError::Bind { addr, source });
        }
    }
    drop(reserve);
    drop(cluster_reserve);
    Ok(Server {
        broker,
        addr,
        registry,
        cluster_addr,
    })
}

/// Validates the cluster settings, reserves the cluster port and builds the shared state.
fn cluster_shared(
    c: cluster::ClusterConfig,
    shards: usize,
) -> Result<(Arc<cluster::ClusterShared>, socket2::Socket), ServeError> {
    if c.node_id.is_empty() || c.node_id.len() > 128 {
        return Err(ServeError::Cluster(
            "node_id must be 1 to 128 bytes (and unique in the cluster)".into(),
        ));
    }
    if !c.roles.router && !c.roles.storage {
        return Err(ServeError::Cluster(
            "a node needs the router role, the storage role, or both".into(),
        ));
    }
    match (&c.tls, &c.gossip_key) {
        (None, None) => tracing::warn!(
            "node links and gossip are plaintext and unauthenticated: keep the cluster port on \
             a private network, or set [cluster.tls] and gossip_key_file"
        ),
        (Some(_), None) => tracing::warn!(
            "gossip is unauthenticated: set gossip_key_file so hosts without it cannot join \
             or declare members down"
        ),
        (None, Some(_)) => {
            tracing::warn!("node links are plaintext: set [cluster.tls] for mutual TLS")
        }
        (Some(_), Some(_)) => {}
    }
    let reserve = ports::reserve(c.listen).map_err(|source| ServeError::Bind {
        addr: c.listen,
        source,
    })?;
    let bound = reserve
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| ServeError::Cluster("no local address for the cluster port".into()))?;
    let mut addr = c.advertise.unwrap_or(bound);
    if addr.port() == 0 {
        addr.set_port(bound.port());
    }
    if addr.ip().is_unspecified() {
        return Err(ServeError::Cluster(format!(
            "cluster listen address {bound} is unspecified: set advertise to the address other \
             nodes reach this one at"
        )));
    }
    let me = cluster::Member {
        id: c.node_id.clone(),
        addr,
        roles: c.roles,
        generation: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64),
    };
    Ok((
        Arc::new(cluster::ClusterShared::new(c, me, shards)),
        reserve,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare_proto::message::IDEMPOTENCY_KEY_BYTES_MAX;
    use fanfare_proto::{ClientMsg, Name, NAME_BYTES_MAX};

    /// The largest publish envelope (longest names and key, largest request id) fits in
    /// [`ENVELOPE_BYTES_MAX`], whatever the payload size.
    #[test]
    fn the_envelope_bound_holds_for_the_largest_publish() {
        let name = Name::try_from("n".repeat(NAME_BYTES_MAX)).unwrap();
        for payload in [0usize, 1, 7, 1000, 1 << 20] {
            let m = ClientMsg::Publish {
                request_id: u64::MAX,
                namespace: name.clone(),
                topic: name.clone(),
                payload: bytes::Bytes::from(vec![0u8; payload]),
                idempotency_key: Some("k".repeat(IDEMPOTENCY_KEY_BYTES_MAX)),
            };
            let overhead = m.encode_to_vec().len() - payload;
            assert!(
                overhead <= ENVELOPE_BYTES_MAX,
                "{overhead} bytes around {payload}"
            );
        }
    }
}
