//! What a node is started with: [`ServerConfig`] and the network [`Limits`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth;
use crate::cluster;

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
    /// Time to receive a request body once its head arrived (408 and close past it).
    pub body_timeout: Duration,
    /// Time to complete a WebSocket message once its first byte arrived (a frame cut short,
    /// or the first fragment of many): close 1008 past it.
    pub message_timeout: Duration,
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
            body_timeout: Duration::from_secs(30),
            message_timeout: Duration::from_secs(30),
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
