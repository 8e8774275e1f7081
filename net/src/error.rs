//! [`ServeError`]: why a node did not start.

use std::net::SocketAddr;

use fanfare_core::StartError;
use thiserror::Error;

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
    /// Settings that do not fit together.
    #[error("settings: {0}")]
    Config(String),
    /// The cluster settings are not usable.
    #[error("cluster: {0}")]
    Cluster(String),
}
