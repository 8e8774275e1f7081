//! Fanfare's load generator (`fanfare bench`) and criterion benchmarks (`benches/`).
//!
//! The generator runs on its own thread-per-core runtime (one glommio executor per
//! generator thread), opens publishers and subscribers against a broker, and measures what
//! subscribers receive:
//!
//! - every payload carries the publisher's id, a per-(publisher, topic) sequence and the
//!   **intended** send time; latency is measured from the intended time, so a generator or
//!   broker that falls behind a fixed rate shows up in the percentiles instead of hiding
//!   (coordinated omission);
//! - each subscriber checks the broker's `(epoch, seq)` per subscription where the broker has
//!   one (Fanfare: gaps, duplicates, announced discontinuities), and each publisher's sequence
//!   (reorders; for brokers without sequences also gaps and duplicates);
//! - the generator reports its own CPU use and warns when it, not the broker, is the
//!   bottleneck.
//!
//! Targets: Fanfare over WebSocket (`ws://`, `wss://`), Server-Sent Events or HTTP/2
//! ([`Transport`]); Redis pub/sub (`redis://`, RESP) and NATS core (`nats://`), so one tool and
//! one method compare brokers.
#![warn(missing_docs)]

mod fanfare;
mod io;
mod nats;
mod redis;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use thiserror::Error;

use crate::io::Dialer;

/// Bytes of the header every generated payload starts with.
pub const PAYLOAD_HEADER_BYTES: usize = 20;
/// How long subscribers keep reading after the last publish.
const GRACE: Duration = Duration::from_secs(2);
/// Highest latency the histograms hold (longer ones are clamped).
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Most publishes a publisher puts in one write.
const WRITE_BATCH_MAX: usize = 64;
/// Length of one interval in the HdrHistogram log.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

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
        }
    }
}

/// Why a run failed.
#[derive(Debug, Error)]
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

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The broker's URL.
    pub target: String,
    /// Messages acknowledged by the broker during the measured time.
    pub published: u64,
    /// Deliveries counted (one per subscriber per message) during the measured time.
    pub delivered: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Deliveries per second.
    pub delivered_per_sec: f64,
    /// Payload bytes delivered per second.
    pub bytes_per_sec: f64,
    /// End-to-end latency, from intended send time to receipt.
    pub latency_us: Percentiles,
    /// Messages missing in a subscription's broker sequence without a discontinuity.
    pub gaps: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Messages of one publisher received out of order.
    pub reorders: u64,
    /// Discontinuities the broker announced.
    pub discontinuities: u64,
    /// Seconds until every subscriber was subscribed.
    pub connect_seconds: f64,
    /// Generator CPU seconds (user + system) during the run.
    pub generator_cpu_seconds: f64,
    /// Generator CPU use as a fraction of its threads (1.0 = every thread busy).
    pub generator_cpu_share: f64,
}

impl Report {
    /// Whether the generator itself was near its limit (its numbers then bound the broker's).
    pub fn generator_saturated(&self) -> bool {
        self.generator_cpu_share > 0.9
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        let l = &self.latency_us;
        format!(
            "{{\"target\":\"{}\",\"published\":{},\"delivered\":{},\"seconds\":{:.3},\"delivered_per_sec\":{:.1},\"bytes_per_sec\":{:.1},\
\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},\
\"gaps\":{},\"duplicates\":{},\"reorders\":{},\"discontinuities\":{},\"connect_seconds\":{:.3},\
\"generator_cpu_seconds\":{:.3},\"generator_cpu_share\":{:.3},\"generator_saturated\":{}}}",
            self.target.replace(['"', '\\'], ""),
            self.published,
            self.delivered,
            self.seconds,
            self.delivered_per_sec,
            self.bytes_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.gaps,
            self.duplicates,
            self.reorders,
            self.discontinuities,
            self.connect_seconds,
            self.generator_cpu_seconds,
            self.generator_cpu_share,
            self.generator_saturated()
        )
    }

    /// A human summary table.
    pub fn table(&self) -> String {
        let l = &self.latency_us;
        let mut t = format!(
            "published        {}\ndelivered        {} ({:.0}/s, {:.1} MB/s)\nlatency (us)     p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\n\
gaps {}  duplicates {}  reorders {}  discontinuities {}\nconnect          {:.2} s\ngenerator CPU    {:.2} s ({:.0}% of its threads)\n",
            self.published,
            self.delivered,
            self.delivered_per_sec,
            self.bytes_per_sec / 1e6,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.gaps,
            self.duplicates,
            self.reorders,
            self.discontinuities,
            self.connect_seconds,
            self.generator_cpu_seconds,
            self.generator_cpu_share * 100.0
        );
        if self.generator_saturated() {
            t.push_str("WARNING: the generator was saturated; these figures bound the generator, not the broker\n");
        }
        t
    }
}

/// Live counters, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Publishes acknowledged so far.
    pub published: AtomicU64,
    /// Deliveries counted so far.
    pub delivered: AtomicU64,
    /// Subscribers subscribed so far.
    pub subscribed: AtomicUsize,
}

fn clock() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

pub(crate) fn now_ns() -> u64 {
    clock().elapsed().as_nanos() as u64
}

// -------------------------------------------------------------------- targets

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Fanfare,
    Redis,
    Nats,
}

/// Where and how to connect.
#[derive(Clone)]
struct Target {
    kind: Kind,
    /// WebSocket path (Fanfare).
    path: String,
    /// For HTTP/1.1 and WebSocket (ALPN http/1.1 on TLS), and for HTTP/2 (ALPN h2).
    http1: Dialer,
    h2: Dialer,
}

/// One target per comma-separated URL, all of one kind.
fn targets(s: &Scenario) -> Result<Vec<Target>, BenchError> {
    let ts = s
        .url
        .split(',')
        .map(|u| target(s, u.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if ts.iter().any(|t| t.kind != ts[0].kind) {
        return Err(BenchError::Scenario(
            "several URLs must all be of one broker kind".into(),
        ));
    }
    Ok(ts)
}

fn target(s: &Scenario, url: &str) -> Result<Target, BenchError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| BenchError::Scenario(format!("not a URL: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/v1/ws".to_owned()),
    };
    let (kind, tls) = match scheme {
        "ws" | "http" => (Kind::Fanfare, false),
        "wss" | "https" => (Kind::Fanfare, true),
        "redis" => (Kind::Redis, false),
        "nats" => (Kind::Nats, false),
        other => {
            return Err(BenchError::Scenario(format!(
                "unsupported scheme {other}://: use ws, wss, http, https, redis or nats"
            )))
        }
    };
    if kind != Kind::Fanfare && s.transport != Transport::Ws {
        return Err(BenchError::Scenario(
            "--transport applies to Fanfare targets only".into(),
        ));
    }
    let dialer = |alpn: &[&[u8]]| -> Result<Dialer, BenchError> {
        Ok(Dialer {
            host: host.clone(),
            tls: if tls {
                Some(io::tls_connector(&host, s.ca.as_deref(), s.insecure, alpn)?)
            } else {
                None
            },
        })
    };
    Ok(Target {
        kind,
        path: if path == "/" { "/v1/ws".into() } else { path },
        http1: dialer(&[b"http/1.1"])?,
        h2: dialer(&[b"h2"])?,
    })
}

impl Target {
    /// The wire name of topic `i`.
    fn topic(&self, ns: &str, i: usize) -> String {
        match self.kind {
            Kind::Fanfare => format!("t{i}"),
            Kind::Redis | Kind::Nats => format!("{ns}.t{i}"),
        }
    }
}

// -------------------------------------------------------------------- connections

/// What a subscriber connection yields.
pub(crate) enum Got {
    /// A message; `pos` is the broker's `(epoch, seq)` when it has one.
    Item {
        pos: Option<(u64, u64)>,
        payload: Bytes,
    },
    /// The broker says messages were lost; delivery continues at `(epoch, next)`.
    Discontinuity { epoch: u64, next: u64 },
}

enum Sub {
    Ws(fanfare::Ws),
    Sse(fanfare::Sse),
    H2(fanfare::H2Sub),
    Redis(redis::RedisSub),
    Nats(nats::NatsSub),
}

impl Sub {
    async fn open(t: &Target, s: &Scenario, topic: &str) -> Result<Sub, BenchError> {
        let token = s.token.as_deref();
        let ns = s.namespace.as_str();
        Ok(match (t.kind, s.transport) {
            (Kind::Redis, _) => Sub::Redis(redis::RedisSub::subscribe(&t.http1, topic).await?),
            (Kind::Nats, _) => Sub::Nats(nats::NatsSub::subscribe(&t.http1, topic).await?),
            (Kind::Fanfare, Transport::Ws) => Sub::Ws(
                fanfare::Ws::connect(&t.http1, &t.path, token)
                    .await?
                    .subscribe(ns, topic)
                    .await?,
            ),
            (Kind::Fanfare, Transport::Sse) => {
                Sub::Sse(fanfare::Sse::subscribe(&t.http1, ns, topic, token).await?)
            }
            (Kind::Fanfare, Transport::H2) => {
                Sub::H2(fanfare::H2Sub::subscribe(&t.h2, ns, topic, token).await?)
            }
        })
    }

    async fn recv(&mut self, out: &mut Vec<Got>) -> Result<(), BenchError> {
        match self {
            Sub::Ws(c) => c.recv(out).await,
            Sub::Sse(c) => c.recv(out).await,
            Sub::H2(c) => c.recv(out).await,
            Sub::Redis(c) => c.recv(out).await,
            Sub::Nats(c) => c.recv(out).await,
        }
    }
}

enum Pub {
    Ws(fanfare::WsPub),
    H2(fanfare::H2Pub),
    Redis(redis::RedisPub),
    Nats(nats::NatsPub),
}

impl Pub {
    async fn open(t: &Target, s: &Scenario, acks: Rc<Acks>) -> Result<Pub, BenchError> {
        let token = s.token.as_deref();
        Ok(match (t.kind, s.transport) {
            (Kind::Redis, _) => Pub::Redis(redis::RedisPub::connect(&t.http1, acks).await?),
            (Kind::Nats, _) => Pub::Nats(nats::NatsPub::connect(&t.http1, s.window, acks).await?),
            (Kind::Fanfare, Transport::H2) => {
                Pub::H2(fanfare::H2Pub::connect(&t.h2, token, acks).await?)
            }
            (Kind::Fanfare, Transport::Ws | Transport::Sse) => Pub::Ws(
                fanfare::Ws::connect(&t.http1, &t.path, token)
                    .await?
                    .into_publisher(acks),
            ),
        })
    }

    /// Queues one publish (HTTP/2 sends it at once; the others append to a pending write).
    async fn push(
        &mut self,
        ns: &str,
        topic: &str,
        payload: &[u8],
        intended: u64,
    ) -> Result<(), BenchError> {
        match self {
            Pub::Ws(p) => p.push(ns, topic, payload, intended),
            Pub::H2(p) => p.send(ns, topic, payload, intended).await?,
            Pub::Redis(p) => p.push(topic, payload, intended),
            Pub::Nats(p) => p.push(topic, payload, intended),
        }
        Ok(())
    }

    /// Writes the pending publishes in one write.
    async fn write(&mut self) -> Result<(), BenchError> {
        match self {
            Pub::Ws(p) => p.write().await,
            Pub::H2(_) => Ok(()),
            Pub::Redis(p) => p.write().await,
            Pub::Nats(p) => p.write().await,
        }
    }

    /// Writes, and asks for acknowledgements of everything sent (NATS batches them).
    async fn flush(&mut self) -> Result<(), BenchError> {
        match self {
            Pub::Nats(p) => p.flush().await,
            _ => self.write().await,
        }
    }
}

/// A publisher's acknowledgements: its window, and counting.
pub(crate) struct Acks {
    in_flight: Cell<usize>,
    waker: RefCell<Option<Waker>>,
    error: RefCell<Option<BenchError>>,
    tally: Rc<RefCell<Tally>>,
    progress: Arc<Progress>,
    /// The measured window `[from, to)` of intended send times.
    window: Cell<(u64, u64)>,
}

impl Acks {
    /// The broker acknowledged the publish intended at `intended`.
    pub(crate) fn ack(&self, intended: u64) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        let (from, to) = self.window.get();
        if intended >= from && intended < to {
            self.tally.borrow_mut().published += 1;
            self.progress.published.fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }

    /// The connection failed.
    pub(crate) fn fail(&self, e: BenchError) {
        self.error.borrow_mut().get_or_insert(e);
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn take_error(&self) -> Result<(), BenchError> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Resolves once fewer than `n` are in flight (or the connection failed).
    async fn below(&self, n: usize) {
        std::future::poll_fn(|cx| {
            if self.in_flight.get() < n || self.error.borrow().is_some() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// Reads a publisher connection's replies until it fails: `parse` takes one reply off the
/// buffer, `on` handles it (acknowledgements, refusals); the first error fails the publisher.
pub(crate) async fn read_replies<T>(
    mut r: futures_lite::io::ReadHalf<io::Stream>,
    mut buf: bytes::BytesMut,
    acks: Rc<Acks>,
    who: &str,
    mut parse: impl FnMut(&mut bytes::BytesMut) -> Result<Option<T>, BenchError>,
    mut on: impl FnMut(T) -> Result<(), BenchError>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let res: Result<(), BenchError> = async {
        loop {
            while let Some(v) = parse(&mut buf)? {
                on(v)?;
            }
            if io::read_more(&mut r, &mut buf, &mut chunk).await? == 0 {
                return Err(BenchError::Connection(format!(
                    "{who} closed a publisher connection"
                )));
            }
        }
    }
    .await;
    if let Err(e) = res {
        acks.fail(e);
    }
}

// -------------------------------------------------------------------- the run

/// Runs `s` and reports; `progress` is updated while it runs (read it from another thread).
pub fn run(s: &Scenario, progress: Arc<Progress>) -> Result<Report, BenchError> {
    check(s)?;
    let targets = targets(s)?;
    let threads = s.threads.max(1);
    let shared = Arc::new(Shared {
        scenario: s.clone(),
        targets,
        progress,
        ready: AtomicUsize::new(0),
        go_ns: AtomicU64::new(u64::MAX),
        failed: std::sync::Mutex::new(None),
    });
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let _ = clock();
    let mut joins = Vec::new();
    for t in 0..threads {
        let shared = shared.clone();
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("fanfare-bench-{t}"))
            .io_memory(1 << 20)
            .spawn(move || worker(shared, t, threads))
            .map_err(|e| BenchError::Runtime(e.to_string()))?;
        joins.push(h);
    }
    // Start publishing once every subscriber is subscribed (or a thread failed).
    let connect_deadline = Instant::now() + Duration::from_secs(300);
    while shared.ready.load(Ordering::Acquire) < threads {
        if let Some(e) = shared
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            shared.go_ns.store(0, Ordering::Release);
            return Err(BenchError::Connection(e));
        }
        if Instant::now() > connect_deadline {
            shared.go_ns.store(0, Ordering::Release);
            return Err(BenchError::Connection(
                "subscribers did not all subscribe within 300 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let connect_seconds = t0.elapsed().as_secs_f64();
    let go = now_ns();
    shared.go_ns.store(go, Ordering::Release);
    let mut total = Tally::new();
    let mut intervals: Vec<(u64, Histogram<u64>)> = Vec::new();
    for j in joins {
        let (tally, iv) = j.join().map_err(|e| BenchError::Runtime(e.to_string()))??;
        total.merge(&tally);
        intervals.extend(iv);
    }
    let cpu = process_cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    if let Some(path) = &s.hdr_log {
        let measure_from = go + s.warmup.as_nanos() as u64;
        write_hdr_log(path, &s.url, measure_from, intervals)?;
    }
    let secs = s.duration.as_secs_f64();
    let q = |p: f64| total.latency.value_at_quantile(p) as f64 / 1000.0;
    Ok(Report {
        target: s.url.clone(),
        published: total.published,
        delivered: total.delivered,
        seconds: secs,
        delivered_per_sec: total.delivered as f64 / secs,
        bytes_per_sec: total.bytes as f64 / secs,
        latency_us: Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: total.latency.max() as f64 / 1000.0,
        },
        gaps: total.gaps,
        duplicates: total.duplicates,
        reorders: total.reorders,
        discontinuities: total.discontinuities,
        connect_seconds,
        generator_cpu_seconds: cpu,
        generator_cpu_share: cpu / (wall * threads as f64),
    })
}

/// Writes the interval histograms (merged across threads by interval) as an HdrHistogram
/// interval log (V2, compressed).
fn write_hdr_log(
    path: &std::path::Path,
    url: &str,
    measure_from: u64,
    intervals: Vec<(u64, Histogram<u64>)>,
) -> Result<(), BenchError> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut merged: std::collections::BTreeMap<u64, Histogram<u64>> = Default::default();
    for (start, h) in intervals {
        let idx = start.saturating_sub(measure_from) / LOG_INTERVAL.as_nanos() as u64;
        match merged.get_mut(&idx) {
            Some(m) => {
                let _ = m.add(&h);
            }
            None => {
                merged.insert(idx, h);
            }
        }
    }
    let err = |e: String| BenchError::Runtime(format!("HdrHistogram log {}: {e}", path.display()));
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| err(e.to_string()))?);
    let mut ser = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "fanfare bench against {url}; delivery latency in ns"
        ))
        .with_start_time(std::time::SystemTime::now())
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut file, &mut ser)
        .map_err(|e| err(e.to_string()))?;
    for (idx, h) in merged {
        log.write_histogram(&h, LOG_INTERVAL * idx as u32, LOG_INTERVAL, None)
            .map_err(|e| err(e.to_string()))?;
    }
    drop(log);
    std::io::Write::flush(&mut file).map_err(|e| err(e.to_string()))
}

fn check(s: &Scenario) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Scenario(m.into()));
    if s.topics == 0 {
        return bad("topics must be at least 1");
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

/// Seconds of CPU (user + system) this process used, from /proc/self/stat.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Shared {
    scenario: Scenario,
    /// One per URL (never empty).
    targets: Vec<Target>,
    progress: Arc<Progress>,
    /// Threads whose connections are all open.
    ready: AtomicUsize,
    /// When publishing starts (ns on the shared clock); MAX until then, 0 to abort.
    go_ns: AtomicU64,
    /// The first connection failure while connecting.
    failed: std::sync::Mutex<Option<String>>,
}

/// One thread's measurements.
struct Tally {
    published: u64,
    delivered: u64,
    bytes: u64,
    gaps: u64,
    duplicates: u64,
    reorders: u64,
    discontinuities: u64,
    latency: Histogram<u64>,
}

fn latency_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits: the bounds are constants, valid by design.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap_or_else(|_| unreachable!())
}

impl Tally {
    fn new() -> Self {
        Self {
            published: 0,
            delivered: 0,
            bytes: 0,
            gaps: 0,
            duplicates: 0,
            reorders: 0,
            discontinuities: 0,
            latency: latency_histogram(),
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.published += o.published;
        self.delivered += o.delivered;
        self.bytes += o.bytes;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.reorders += o.reorders;
        self.discontinuities += o.discontinuities;
        let _ = self.latency.add(&o.latency);
    }
}

type Intervals = Vec<(u64, Histogram<u64>)>;

async fn sleep_until(t_ns: u64) {
    let now = now_ns();
    if t_ns > now {
        glommio::timer::sleep(Duration::from_nanos(t_ns - now)).await;
    }
}

/// Opens this thread's subscribers, `connect_concurrency` at a time, paced by `connect_rate`.
async fn connect_subscribers(
    shared: &Arc<Shared>,
    t: usize,
    threads: usize,
) -> Result<Vec<Sub>, BenchError> {
    let s = &shared.scenario;
    let queue: Rc<RefCell<std::collections::VecDeque<usize>>> = Rc::new(RefCell::new(
        (0..s.subscribers).filter(|i| i % threads == t).collect(),
    ));
    let gap_ns = s
        .connect_rate
        .map(|r| (1e9 * threads as f64 / r.max(1) as f64) as u64);
    let next_slot = Rc::new(Cell::new(now_ns()));
    let subs = Rc::new(RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..s.connect_concurrency {
        let (queue, next_slot, subs, shared) = (
            queue.clone(),
            next_slot.clone(),
            subs.clone(),
            shared.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            loop {
                let Some(i) = queue.borrow_mut().pop_front() else {
                    return Ok(());
                };
                if let Some(g) = gap_ns {
                    let at = next_slot.get().max(now_ns());
                    next_slot.set(at + g);
                    sleep_until(at).await;
                }
                let s = &shared.scenario;
                let t = &shared.targets[i % shared.targets.len()];
                let topic = t.topic(&s.namespace, i % s.topics);
                let sub = Sub::open(t, s, &topic).await?;
                shared.progress.subscribed.fetch_add(1, Ordering::Relaxed);
                subs.borrow_mut().push(sub);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let out = std::mem::take(&mut *subs.borrow_mut());
    Ok(out)
}

async fn worker(
    shared: Arc<Shared>,
    t: usize,
    threads: usize,
) -> Result<(Tally, Intervals), BenchError> {
    let r = connect_all(&shared, t, threads).await;
    let (subs, pubs, tally) = match r {
        Ok(x) => x,
        Err(e) => {
            let mut f = shared.failed.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert(e.to_string());
            return Err(e);
        }
    };
    shared.ready.fetch_add(1, Ordering::AcqRel);
    while shared.go_ns.load(Ordering::Acquire) == u64::MAX {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let go = shared.go_ns.load(Ordering::Acquire);
    if go == 0 {
        return Err(BenchError::Runtime("run aborted".into()));
    }
    let s = &shared.scenario;
    let measure_from = go + s.warmup.as_nanos() as u64;
    let stop_at = measure_from + s.duration.as_nanos() as u64;
    let end = stop_at + GRACE.as_nanos() as u64;
    // Interval histograms for the HdrHistogram log: recorded by receipt time.
    let interval = Rc::new(RefCell::new(latency_histogram()));
    let intervals: Rc<RefCell<Intervals>> = Rc::new(RefCell::new(Vec::new()));
    let ticker = s.hdr_log.as_ref().map(|_| {
        let (interval, intervals) = (interval.clone(), intervals.clone());
        glommio::spawn_local(async move {
            let mut start = measure_from;
            loop {
                sleep_until(start + LOG_INTERVAL.as_nanos() as u64).await;
                let h = std::mem::replace(&mut *interval.borrow_mut(), latency_histogram());
                intervals.borrow_mut().push((start, h));
                start += LOG_INTERVAL.as_nanos() as u64;
                if start >= stop_at {
                    break;
                }
            }
        })
    });
    let mut tasks = Vec::new();
    for sub in subs {
        let (shared, tally, interval) = (shared.clone(), tally.clone(), interval.clone());
        tasks.push(glommio::spawn_local(async move {
            // One timer per subscriber for the whole run ends it at the deadline.
            futures_lite::future::or(
                subscriber(sub, shared, tally, interval, measure_from, stop_at),
                async {
                    sleep_until(end).await;
                    Ok(())
                },
            )
            .await
        }));
    }
    for (j, p, acks) in pubs {
        let shared = shared.clone();
        tasks.push(glommio::spawn_local(async move {
            publisher(p, j, &shared, acks, go, stop_at).await
        }));
    }
    let mut first_err = None;
    for task in tasks {
        if let Err(e) = task.await {
            first_err.get_or_insert(e);
        }
    }
    if let Some(t) = ticker {
        t.await;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let out = std::mem::replace(&mut *tally.borrow_mut(), Tally::new());
    let iv = std::mem::take(&mut *intervals.borrow_mut());
    Ok((out, iv))
}

type Publishers = Vec<(usize, Pub, Rc<Acks>)>;

async fn connect_all(
    shared: &Arc<Shared>,
    t: usize,
    threads: usize,
) -> Result<(Vec<Sub>, Publishers, Rc<RefCell<Tally>>), BenchError> {
    let tally = Rc::new(RefCell::new(Tally::new()));
    let subs = connect_subscribers(shared, t, threads).await?;
    let s = &shared.scenario;
    let mut pubs = Vec::new();
    // Acks are counted against the measured window, known only at go (set by the publisher).
    for j in (0..s.publishers).filter(|j| j % threads == t) {
        let acks = Rc::new(Acks {
            in_flight: Cell::new(0),
            waker: RefCell::new(None),
            error: RefCell::new(None),
            tally: tally.clone(),
            progress: shared.progress.clone(),
            window: Cell::new((u64::MAX, 0)),
        });
        let target = &shared.targets[(j + 1) % shared.targets.len()];
        let p = Pub::open(target, s, acks.clone()).await?;
        pubs.push((j, p, acks));
    }
    Ok((subs, pubs, tally))
}

async fn publisher(
    mut p: Pub,
    id: usize,
    shared: &Shared,
    acks: Rc<Acks>,
    go: u64,
    stop_at: u64,
) -> Result<(), BenchError> {
    let s = &shared.scenario;
    // The measured window is known now; the reader task holds the same Acks.
    acks.window.set((go + s.warmup.as_nanos() as u64, stop_at));
    let per_pub_rate = s.rate.map(|r| r as f64 / s.publishers.max(1) as f64);
    let interval_ns = per_pub_rate.map(|r| (1e9 / r) as u64);
    let mut topic_seq: HashMap<usize, u64> = HashMap::new();
    let mut payload = vec![0u8; s.payload_bytes];
    let mut k: u64 = 0;
    let mut queued = 0;
    loop {
        // The intended send time: on schedule for a fixed rate, now when as fast as possible.
        let intended = match interval_ns {
            Some(iv) => go + k * iv,
            None => now_ns(),
        };
        if intended >= stop_at {
            break;
        }
        let now = now_ns();
        if intended > now + 200_000 {
            p.write().await?;
            queued = 0;
            glommio::timer::sleep(Duration::from_nanos(intended - now)).await;
        }
        if acks.in_flight.get() >= s.window {
            p.flush().await?;
            queued = 0;
            acks.below(s.window).await;
        }
        acks.take_error()?;
        let topic = (id + k as usize * s.publishers.max(1)) % s.topics;
        let seq = topic_seq.entry(topic).or_insert(0);
        *seq += 1;
        payload[0..4].copy_from_slice(&(id as u32).to_le_bytes());
        payload[4..12].copy_from_slice(&seq.to_le_bytes());
        payload[12..20].copy_from_slice(&intended.to_le_bytes());
        let name = shared.targets[0].topic(&s.namespace, topic);
        // Counted before the write: the ack can arrive while the write is still awaited.
        acks.in_flight.set(acks.in_flight.get() + 1);
        p.push(&s.namespace, &name, &payload, intended).await?;
        queued += 1;
        k += 1;
        // Batch writes: everything due now goes in one write (up to a bound).
        let next_due = match interval_ns {
            Some(iv) => go + k * iv <= now_ns(),
            None => acks.in_flight.get() < s.window,
        };
        if !next_due || queued >= WRITE_BATCH_MAX {
            p.write().await?;
            queued = 0;
        }
    }
    p.flush().await?;
    futures_lite::future::or(acks.below(1), glommio::timer::sleep(GRACE)).await;
    acks.take_error()
}

async fn subscriber(
    mut sub: Sub,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    interval: Rc<RefCell<Histogram<u64>>>,
    measure_from: u64,
    stop_at: u64,
) -> Result<(), BenchError> {
    let mut got = Vec::new();
    let mut next_seq: Option<(u64, u64)> = None; // (epoch, next seq)
    let mut last_pub: HashMap<u32, u64> = HashMap::new();
    let log = shared.scenario.hdr_log.is_some();
    loop {
        got.clear();
        sub.recv(&mut got).await?;
        let now = now_ns();
        let mut t = tally.borrow_mut();
        let before = t.delivered;
        for g in got.drain(..) {
            let (pos, p) = match g {
                Got::Discontinuity { epoch, next } => {
                    t.discontinuities += 1;
                    next_seq = Some((epoch, next));
                    continue;
                }
                Got::Item { pos, payload } => (pos, payload),
            };
            if let Some((epoch, seq)) = pos {
                match next_seq {
                    Some((e, n)) if e == epoch && seq < n => t.duplicates += 1,
                    Some((e, n)) if e == epoch && seq > n => t.gaps += seq - n,
                    _ => {}
                }
                if next_seq.is_none_or(|(e, n)| e != epoch || seq >= n) {
                    next_seq = Some((epoch, seq + 1));
                }
            }
            if p.len() < PAYLOAD_HEADER_BYTES {
                continue;
            }
            let publisher = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            let pseq = u64::from_le_bytes(p[4..12].try_into().unwrap_or([0; 8]));
            let intended = u64::from_le_bytes(p[12..20].try_into().unwrap_or([0; 8]));
            match last_pub.get(&publisher).copied() {
                // Brokers without sequences: the publisher's sequence shows loss and repeats.
                Some(last) if pos.is_none() && pseq == last => t.duplicates += 1,
                Some(last) if pos.is_none() && pseq > last + 1 => t.gaps += pseq - last - 1,
                Some(last) if pseq < last => t.reorders += 1,
                _ => {}
            }
            let last = last_pub.entry(publisher).or_insert(0);
            *last = (*last).max(pseq);
            if intended >= measure_from && intended < stop_at {
                let lat = now.saturating_sub(intended).max(1);
                t.delivered += 1;
                t.bytes += p.len() as u64;
                t.latency.saturating_record(lat);
                if log {
                    interval.borrow_mut().saturating_record(lat);
                }
            }
        }
        // Progress in batches: one shared counter update per read, not per message.
        let n = t.delivered - before;
        drop(t);
        shared.progress.delivered.fetch_add(n, Ordering::Relaxed);
    }
}
