//! What a run is asked to do ([`Scenario`]), how a Fanfare target is spoken to
//! ([`Transport`]), why a run fails ([`BenchError`]), and the checks a scenario must pass.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Bytes of the header every generated payload starts with.
pub const PAYLOAD_HEADER_BYTES: usize = 20;

/// How a Fanfare target is spoken to. Peer brokers (`redis://`, `nats://`) have their own
/// protocol and ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// WebSocket for publishers and subscribers (`ws://`, or `wss://` for TLS).
    #[default]
    Ws,
    /// Subscribers read Server-Sent Events over HTTP/1.1; publishers use WebSocket.
    Sse,
    /// HTTP/2 (prior knowledge on `ws://`/`http://`, ALPN on `wss://`/`https://`): subscribers
    /// read length-prefixed frames, publishers `POST` (one stream per message).
    H2,
}

impl Transport {
    /// Its name on the command line: `ws`, `sse` or `h2`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::H2 => "h2",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ws" | "wss" => Ok(Transport::Ws),
            "sse" => Ok(Transport::Sse),
            "h2" => Ok(Transport::H2),
            other => Err(format!("unknown transport {other:?}: ws, wss, sse or h2")),
        }
    }
}

/// One load test.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The broker: `ws://host:port[/path]` or `wss://` (Fanfare; `http://`, `https://` too),
    /// `redis://host:port`, `nats://host:port`. Several comma-separated URLs of one kind (a
    /// cluster's routers): subscriber `i` connects to URL `i mod n`, publisher `j` to URL
    /// `(j + 1) mod n`, so with two routers messages cross from one to the other.
    pub url: String,
    /// How to speak to a Fanfare target.
    pub transport: Transport,
    /// Publishing connections.
    pub publishers: usize,
    /// Subscribing connections (one subscription each).
    pub subscribers: usize,
    /// Topics; subscriber *i* takes topic *i mod topics*, publishers cycle over all.
    pub topics: usize,
    /// Payload size in bytes (at least [`PAYLOAD_HEADER_BYTES`]).
    pub payload_bytes: usize,
    /// Total publish rate in messages per second, or `None` for as fast as the window allows.
    pub rate: Option<u64>,
    /// Publishes in flight per publisher (unacknowledged) before it waits.
    pub window: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before measuring starts (messages sent then are delivered but not counted).
    pub warmup: Duration,
    /// New connections per second while connecting (`None`: as fast as possible).
    pub connect_rate: Option<u64>,
    /// Connections each generator thread opens at once while connecting.
    pub connect_concurrency: usize,
    /// Generator threads (executors).
    pub threads: usize,
    /// Namespace of the test topics (Redis channels and NATS subjects are `namespace.tN`).
    pub namespace: String,
    /// Fanfare access token (query string on WebSocket and SSE, bearer on HTTP/2).
    pub token: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (TLS).
    pub ca: Option<PathBuf>,
    /// Skip TLS certificate verification (test certificates only).
    pub insecure: bool,
    /// Write an HdrHistogram interval log of delivery latency here (one-second intervals,
    /// values in nanoseconds; plot with HdrHistogram's log tools).
    pub hdr_log: Option<PathBuf>,
    /// Every publish carries a unique idempotency key, so the owner's key window is part of
    /// the measured cost (Fanfare over WebSocket; other targets ignore it).
    pub idempotency_keys: bool,
    /// The broker's process id, on this machine: its CPU time is read at the measured
    /// window's edges and reported beside the deliveries counted in the same window.
    pub broker_pid: Option<u32>,
    /// Publishes are stored: NATS publishes to JetStream (a stream `BENCH` with file storage
    /// over `<namespace>.>`, created if missing; each message acknowledged by its PubAck),
    /// Redis appends with `XADD` (its persistence is the server's `appendfsync`); Fanfare's
    /// publishes are stored when the broker runs with `--data-dir` (nothing changes here).
    pub durable: bool,
}

impl Scenario {
    /// What the run does, on one line: transport and URL, connections, topics, payload, rate,
    /// window and times (reports start with it, so a result says what produced it).
    pub fn summary(&self) -> String {
        let rate = self.rate.map_or_else(
            || "as fast as the window allows".to_owned(),
            |r| format!("{r} msg/s"),
        );
        format!(
            "{} to {}: {} publishers, {} subscribers, {} topics, {}-byte payloads, {rate}, \
             window {}, {:.1} s measured after {:.1} s warm-up, {} threads",
            self.transport.name(),
            self.url,
            self.publishers,
            self.subscribers,
            self.topics,
            self.payload_bytes,
            self.window,
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64(),
            self.threads,
        )
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:7070/v1/ws".into(),
            transport: Transport::Ws,
            publishers: 1,
            subscribers: 10,
            topics: 1,
            payload_bytes: 128,
            rate: Some(1000),
            window: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            connect_rate: None,
            connect_concurrency: 64,
            threads: 1,
            namespace: "bench".into(),
            token: None,
            ca: None,
            insecure: false,
            hdr_log: None,
            idempotency_keys: false,
            broker_pid: None,
            durable: false,
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The scenario is not runnable.
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// A connection could not be made or broke.
    #[error("connection: {0}")]
    Connection(String),
    /// A generator thread failed.
    #[error("generator: {0}")]
    Runtime(String),
}

pub(crate) fn check(s: &Scenario) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Scenario(m.into()));
    if s.topics == 0 {
        return bad("topics must be at least 1");
    }
    if let Err(e) = fanfare_proto::Name::try_from(s.namespace.as_str()) {
        return Err(BenchError::Scenario(format!("namespace: {e}")));
    }
    if s.payload_bytes < PAYLOAD_HEADER_BYTES {
        return bad("payload must be at least 20 bytes (publisher id, sequence, timestamp)");
    }
    if s.publishers == 0 && s.subscribers == 0 {
        return bad("nothing to do: no publishers and no subscribers");
    }
    if s.window == 0 {
        return bad("window must be at least 1");
    }
    if s.rate == Some(0) {
        return bad("rate must be positive (omit it for as fast as possible)");
    }
    if s.duration.is_zero() {
        return bad("duration must be positive");
    }
    if s.connect_concurrency == 0 {
        return bad("connect_concurrency must be at least 1");
    }
    Ok(())
}
