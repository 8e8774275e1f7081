//! Fanfare's network front: one port for WebSocket and HTTP, over the engine's shards.
//!
//! [`start`] runs a [`fanfare_core::Broker`] whose every shard binds the same address
//! (SO_REUSEPORT: the kernel spreads connections over the shards) and owns the connections
//! it accepts. The first bytes of a connection decide what it is:
//!
//! - `GET /v1/ws` with an upgrade: a WebSocket session ([`ws`]), binary frames each holding
//!   one flatbuffers `ClientMessage` / `ServerMessage` (see docs/protocol.md);
//! - any other HTTP/1.1 request ([`http`]): `POST /v1/topics/{ns}/{topic}` publishes,
//!   `GET /v1/topics/{ns}/{topic}` streams a subscription as Server-Sent Events or
//!   length-prefixed frames, `GET /healthz`, `GET /metrics`.
//!
//! Fan-out is zero-copy up to the socket: a message reaching a shard is encoded once per
//! wire encoding ([`fanfare_core::Delivery::encoded`]) and the same buffer is queued on every
//! connection; each connection's writer coalesces everything queued into one write.
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod admin;
pub mod auth;
pub mod cluster;
mod conn;
mod h2;
pub mod http;
pub mod metrics;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fanfare_core::{Broker, ShardHandle, StartError};
use thiserror::Error;

pub use metrics::Registry;

/// Limits of the network front. Each has a default and a stated overflow rule (see
/// docs/configuration.md).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest WebSocket frame or message a client may send, in bytes (close 1009 past it).
    pub frame_bytes_max: usize,
    /// Largest HTTP request header block, in bytes (431 past it).
    pub header_bytes_max: usize,
    /// Subscriptions on one connection (error `TooManySubscriptions` past it).
    pub subscriptions_per_connection_max: usize,
    /// Connections on the node, split evenly over shards (503 and close past it).
    pub connections_max: usize,
    /// Time from accept to a complete request head or WebSocket upgrade (close past it).
    pub handshake_timeout: Duration,
    /// A connection with no subscription that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The server pings WebSocket clients this often.
    pub ping_interval: Duration,
    /// A WebSocket client that does not answer a ping within this is closed (1008).
    pub pong_timeout: Duration,
    /// Bytes queued to one connection before its subscriptions lag (skip ahead, catch up).
    pub send_queue_bytes_max: usize,
    /// A connection whose queue stays full (or whose socket accepts nothing) this long is
    /// closed with a reason.
    pub slow_deadline: Duration,
    /// Publishes one connection may have in flight; more wait (backpressure).
    pub publishes_in_flight_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: (1 << 20) + 64 * 1024,
            header_bytes_max: 16 * 1024,
            subscriptions_per_connection_max: 1024,
            connections_max: 100_000,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            send_queue_bytes_max: 1 << 20,
            slow_deadline: Duration::from_secs(10),
            publishes_in_flight_max: 256,
        }
    }
}

/// Everything [`start`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen (port 0 picks a free port; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Network limits.
    pub limits: Limits,
    /// Engine settings (shards, history, message size, ...).
    pub engine: fanfare_core::Config,
    /// TLS: when set, connections that open with a TLS handshake are served over TLS (wss,
    /// https) on the same port as plaintext ones.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Access control: off (no keys) by default.
    pub auth: auth::AuthConfig,
    /// Cluster membership and roles (None: a single node owning every topic).
    pub cluster: Option<cluster::ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            limits: Limits::default(),
            engine: fanfare_core::Config::default(),
            tls: None,
            auth: auth::AuthConfig::default(),
            cluster: None,
        }
    }
}

/// Why the server did not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] StartError),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The access-control settings are not usable (a bad key, duplicate key ids).
    #[error("auth: {0}")]
    Auth(String),
    /// The cluster settings are not usable.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Builds the TLS configuration from PEM files: a certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). ALPN offers `h2` and `http/1.1`.
pub fn tls_from_pem(
    cert_chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    tls_config(read_pem_certs(cert_chain)?, read_pem_key(key)?)
}

/// The certificates in a PEM file (at least one).
pub(crate) fn read_pem_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            ServeError::Tls(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn read_pem_key(
    path: &std::path::Path,
) -> Result<rustls_pki_types::PrivateKeyDer<'static>, ServeError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_file(path).map_err(|e| {
        ServeError::Tls(format!(
            "cannot read a private key from {}: {e}",
            path.display()
        ))
    })
}

/// Builds the TLS configuration from DER certificates and key (ring provider, TLS 1.2 and 1.3).
pub fn tls_config(
    certs: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

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
        mut engine,
        tls,
        auth,
        cluster,
    } = cfg;
    let auth = Arc::new(auth::Auth::new(auth).map_err(ServeError::Auth)?);
    // Reserve the address (and learn the port when 0 was asked) with a socket that is bound
    // but never listens, so it receives no connections; each shard then binds the same port.
    let reserve = reserve(listen).map_err(|source| ServeError::Bind {
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
    engine.message_bytes_max = engine.message_bytes_max.min(limits.frame_bytes_max);
    let shards = engine.shard_count();
    let registry = Arc::new(Registry::new(shards));
    let admin = Arc::new(admin::AdminHub::new(shards));
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
        let node = conn::NodeShared {
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
            let r = conn::serve_shard(h, node.clone());
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
    let reserve = reserve(c.listen).map_err(|source| ServeError::Bind {
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

fn reserve(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    // SO_REUSEPORT would let us share a port another process of this user listens on;
    // refuse that plainly instead.
    if addr.port() != 0 {
        let mut probe = addr;
        if probe.ip().is_unspecified() {
            probe.set_ip(if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "address already in use",
            ));
        }
    }
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}
