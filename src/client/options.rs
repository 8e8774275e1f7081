//! What an `AsyncClient` is configured with, and what it reports.

use std::time::Duration;

use bytes::Bytes;
use fanfare_proto::message::PresenceEventMsg;

/// How an `AsyncClient` connects and behaves; only `url` is needed.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://host:port[/path]` or `wss://host:port[/path]` (path default `/v1/ws`).
    pub url: String,
    /// A token, sent in `Hello` on every connection.
    pub token: Option<String>,
    /// For `wss://`: a PEM file of the CA certificates to trust (required for `wss://`).
    pub ca: Option<std::path::PathBuf>,
    /// Reconnect back-off: the first delay's ceiling and the largest (full jitter in between).
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// Give up a publish after this long; also each attempt's TCP connect, TLS handshake and
    /// upgrade.
    pub request_timeout: Duration,
    /// How long `AsyncClient::connect` keeps trying when the server is not up yet; zero
    /// tries once. Later reconnects are bounded by the call that needs them.
    pub connect_timeout: Duration,
    /// With nothing received for this long the connection is taken for dead (the server pings
    /// every 30 s and sends heartbeats on quiet subscriptions every 5 s).
    pub idle_timeout: Duration,
}

impl ClientOptions {
    /// Options with defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            ca: None,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// What an `AsyncClient` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A subscription is live (again, when `resumed`): where it starts.
    Subscribed {
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// Epoch.
        epoch: u64,
        /// The next sequence it delivers.
        next_seq: u64,
        /// After a reconnect.
        resumed: bool,
    },
    /// A message.
    Message {
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// Epoch.
        epoch: u64,
        /// Sequence.
        seq: u64,
        /// Body.
        payload: Bytes,
        /// Publisher, when the server knows.
        publisher_id: Option<String>,
    },
    /// Messages that will never arrive: after `last_seq` of `last_epoch` up to `new_seq - 1`
    /// of `new_epoch`. Delivery goes on at `new_seq`.
    Discontinuity {
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// The epoch of the last message delivered (or resumed from).
        last_epoch: u64,
        /// Its sequence.
        last_seq: u64,
        /// The epoch delivery goes on in.
        new_epoch: u64,
        /// The next sequence delivered.
        new_seq: u64,
    },
    /// A presence event a subscription asked for.
    Presence {
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// The event.
        event: PresenceEventMsg,
    },
    /// The connection dropped; the client reconnects on its next call.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// Connected again (subscriptions are being resumed).
    Reconnected,
}
