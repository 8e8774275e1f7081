//! Fanfare's load generator (`fanfare bench`) and criterion benchmarks (`benches/`).
//!
//! The generator runs on its own thread-per-core runtime (one glommio executor per
//! generator thread), opens WebSocket publishers and subscribers against a broker, and
//! measures what subscribers receive:
//!
//! - every payload carries the publisher's id, a per-(publisher, topic) sequence and the
//!   **intended** send time; latency is measured from the intended time, so a generator or
//!   broker that falls behind a fixed rate shows up in the percentiles instead of hiding
//!   (coordinated omission);
//! - each subscriber checks the broker's `(epoch, seq)` per subscription (gaps, duplicates,
//!   discontinuities) and each publisher's sequence (reorders);
//! - the generator reports its own CPU use and warns when it, not the broker, is the
//!   bottleneck.
//!
//! Transports: WebSocket (`ws://`). SSE, HTTP/2, TLS and other brokers are not built yet.
#![warn(missing_docs)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::ws::{self, Message, Opcode, Role};
use fanfare_proto::{ClientMsg, ServerMsg, Start};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use hdrhistogram::Histogram;
use thiserror::Error;

/// Bytes of the header every generated payload starts with.
pub const PAYLOAD_HEADER_BYTES: usize = 20;
/// How long subscribers keep reading after the last publish.
const GRACE: Duration = Duration::from_secs(2);
/// Highest latency the histograms hold (longer ones are clamped).
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// One load test.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `ws://host:port[/path]` of the broker.
    pub url: String,
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
    /// Generator threads (executors).
    pub threads: usize,
    /// Namespace of the test topics.
    pub namespace: String,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:7070/v1/ws".into(),
            publishers: 1,
            subscribers: 10,
            topics: 1,
            payload_bytes: 128,
            rate: Some(1000),
            window: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            connect_rate: None,
            threads: 1,
            namespace: "bench".into(),
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
            "{{\"published\":{},\"delivered\":{},\"seconds\":{:.3},\"delivered_per_sec\":{:.1},\"bytes_per_sec\":{:.1},\
\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},\
\"gaps\":{},\"duplicates\":{},\"reorders\":{},\"discontinuities\":{},\"connect_seconds\":{:.3},\
\"generator_cpu_seconds\":{:.3},\"generator_cpu_share\":{:.3},\"generator_saturated\":{}}}",
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

fn now_ns() -> u64 {
    clock().elapsed().as_nanos() as u64
}

/// Runs `s` and reports; `progress` is updated while it runs (read it from another thread).
pub fn run(s: &Scenario, progress: Arc<Progress>) -> Result<Report, BenchError> {
    check(s)?;
    let (host, path) = split_url(&s.url)?;
    let threads = s.threads.max(1);
    let shared = Arc::new(Shared {
        scenario: s.clone(),
        host,
        path,
        progress,
        ready: AtomicUsize::new(0),
        go_ns: AtomicU64::new(u64::MAX),
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
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    while shared.ready.load(Ordering::Acquire) < threads {
        if Instant::now() > connect_deadline {
            return Err(BenchError::Connection(
                "subscribers did not all subscribe within 120 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let connect_seconds = t0.elapsed().as_secs_f64();
    shared.go_ns.store(now_ns(), Ordering::Release);
    let mut total = Tally::new();
    for j in joins {
        let tally = j.join().map_err(|e| BenchError::Runtime(e.to_string()))??;
        total.merge(&tally);
    }
    let cpu = process_cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let secs = s.duration.as_secs_f64();
    let q = |p: f64| total.latency.value_at_quantile(p) as f64 / 1000.0;
    Ok(Report {
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
    Ok(())
}

fn split_url(url: &str) -> Result<(String, String), BenchError> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        BenchError::Scenario(format!("only ws:// URLs are supported so far, got {url}"))
    })?;
    Ok(match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/v1/ws".to_owned()),
    })
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
    host: String,
    path: String,
    progress: Arc<Progress>,
    /// Threads whose subscribers are all subscribed.
    ready: AtomicUsize,
    /// When publishing starts (ns on the shared clock); MAX until then.
    go_ns: AtomicU64,
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
            // 1 ns to 60 s at 3 significant digits: the bounds are constants, valid by design.
            latency: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .unwrap_or_else(|_| unreachable!()),
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

async fn worker(shared: Arc<Shared>, t: usize, threads: usize) -> Result<Tally, BenchError> {
    let s = &shared.scenario;
    let tally = Rc::new(RefCell::new(Tally::new()));
    // Subscribers first, at the connect rate (split over threads).
    let mine: Vec<usize> = (0..s.subscribers).filter(|i| i % threads == t).collect();
    let gap = s
        .connect_rate
        .map(|r| Duration::from_secs_f64(threads as f64 / r.max(1) as f64));
    let mut subs = Vec::new();
    for i in mine {
        let mut c = Conn::connect(&shared.host, &shared.path).await?;
        c.subscribe(&s.namespace, &topic_name(i % s.topics)).await?;
        shared.progress.subscribed.fetch_add(1, Ordering::Relaxed);
        subs.push(c);
        if let Some(g) = gap {
            glommio::timer::sleep(g).await;
        }
    }
    let mut pubs = Vec::new();
    for j in (0..s.publishers).filter(|j| j % threads == t) {
        pubs.push((j, Conn::connect(&shared.host, &shared.path).await?));
    }
    shared.ready.fetch_add(1, Ordering::AcqRel);
    while shared.go_ns.load(Ordering::Acquire) == u64::MAX {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let go = shared.go_ns.load(Ordering::Acquire);
    let measure_from = go + s.warmup.as_nanos() as u64;
    let stop_at = measure_from + s.duration.as_nanos() as u64;
    let mut tasks = Vec::new();
    for c in subs {
        tasks.push(glommio::spawn_local(subscriber(
            c,
            shared.clone(),
            tally.clone(),
            measure_from,
            stop_at,
        )));
    }
    for (j, c) in pubs {
        tasks.push(glommio::spawn_local(publisher(
            c,
            j,
            shared.clone(),
            tally.clone(),
            go,
            measure_from,
            stop_at,
        )));
    }
    for task in tasks {
        task.await?;
    }
    let out = std::mem::replace(&mut *tally.borrow_mut(), Tally::new());
    Ok(out)
}

fn topic_name(i: usize) -> String {
    format!("t{i}")
}

async fn publisher(
    conn: Conn,
    id: usize,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    go: u64,
    measure_from: u64,
    stop_at: u64,
) -> Result<(), BenchError> {
    let s = &shared.scenario;
    let Conn {
        stream,
        mut rbuf,
        mut decoder,
        ..
    } = conn;
    let (mut r, mut w) = futures_lite::io::split(stream);
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    let window_waker: Rc<RefCell<Option<std::task::Waker>>> = Rc::new(RefCell::new(None));
    let done = Rc::new(std::cell::Cell::new(false));
    // Acks: count them, free window slots.
    let acks = {
        let (in_flight, done, tally, progress) = (
            in_flight.clone(),
            done.clone(),
            tally.clone(),
            shared.progress.clone(),
        );
        let window_waker = window_waker.clone();
        glommio::spawn_local(async move {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while let Some(m) = decoder
                    .decode(&mut rbuf)
                    .map_err(|e| BenchError::Connection(e.to_string()))?
                {
                    if let Message::Binary(b) = m {
                        match ServerMsg::decode(&b, &DecodeLimits::default()) {
                            Ok(ServerMsg::PublishAck { request_id, .. }) => {
                                in_flight.set(in_flight.get().saturating_sub(1));
                                if let Some(wk) = window_waker.borrow_mut().take() {
                                    wk.wake();
                                }
                                if request_id >= measure_from && request_id < stop_at {
                                    tally.borrow_mut().published += 1;
                                    progress.published.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(ServerMsg::Error { text, .. }) => {
                                return Err(BenchError::Connection(format!(
                                    "publish refused: {text}"
                                )))
                            }
                            _ => {}
                        }
                    }
                }
                if done.get() && in_flight.get() == 0 {
                    return Ok(());
                }
                let n = r
                    .read(&mut chunk)
                    .await
                    .map_err(|e| BenchError::Connection(e.to_string()))?;
                if n == 0 {
                    return Err(BenchError::Connection(
                        "broker closed a publisher connection".into(),
                    ));
                }
                rbuf.extend_from_slice(&chunk[..n]);
            }
        })
    };
    let per_pub_rate = s.rate.map(|r| r as f64 / s.publishers.max(1) as f64);
    let interval_ns = per_pub_rate.map(|r| (1e9 / r) as u64);
    let mut topic_seq: HashMap<usize, u64> = HashMap::new();
    let mut payload = vec![0u8; s.payload_bytes];
    let mut out = BytesMut::new();
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(1024);
    let mut k: u64 = 0;
    let mut mask: u32 = 0x1234_5678 ^ id as u32;
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
            glommio::timer::sleep(Duration::from_nanos(intended - now)).await;
        }
        // Wait for a window slot (the ack reader wakes us).
        std::future::poll_fn(|cx| {
            if in_flight.get() < s.window {
                std::task::Poll::Ready(())
            } else {
                *window_waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await;
        let topic = (id + k as usize * s.publishers.max(1)) % s.topics;
        let seq = topic_seq.entry(topic).or_insert(0);
        *seq += 1;
        payload[0..4].copy_from_slice(&(id as u32).to_le_bytes());
        payload[4..12].copy_from_slice(&seq.to_le_bytes());
        payload[12..20].copy_from_slice(&intended.to_le_bytes());
        let msg = ClientMsg::Publish {
            // The request id carries the intended time, so acks can be counted by window.
            request_id: intended,
            namespace: s.namespace.clone(),
            topic: topic_name(topic),
            payload: Bytes::copy_from_slice(&payload),
            idempotency_key: None,
        };
        msg.encode_into(&mut fbb);
        mask = mask.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        out.clear();
        ws::encode_frame(
            &mut out,
            Opcode::Binary,
            true,
            fbb.finished_data(),
            Some(mask.to_be_bytes()),
        );
        in_flight.set(in_flight.get() + 1);
        w.write_all(&out)
            .await
            .map_err(|e| BenchError::Connection(e.to_string()))?;
        k += 1;
    }
    done.set(true);
    // Wake the ack reader if it is waiting with nothing in flight.
    let ping = ClientMsg::Ping { nonce: 0 };
    ping.encode_into(&mut fbb);
    out.clear();
    ws::encode_frame(
        &mut out,
        Opcode::Binary,
        true,
        fbb.finished_data(),
        Some([1, 2, 3, 4]),
    );
    let _ = w.write_all(&out).await;
    futures_lite::future::or(acks, async {
        glommio::timer::sleep(GRACE).await;
        Ok(())
    })
    .await
}

async fn subscriber(
    conn: Conn,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    measure_from: u64,
    stop_at: u64,
) -> Result<(), BenchError> {
    let Conn {
        mut stream,
        mut rbuf,
        mut decoder,
        ..
    } = conn;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut next_seq: Option<(u64, u64)> = None; // (epoch, next seq)
    let mut last_pub: HashMap<u32, u64> = HashMap::new();
    let deadline_ns = stop_at + GRACE.as_nanos() as u64;
    let mut local = Tally::new();
    let mut reported = 0;
    loop {
        while let Some(m) = decoder
            .decode(&mut rbuf)
            .map_err(|e| BenchError::Connection(e.to_string()))?
        {
            let Message::Binary(b) = m else { continue };
            let items = match ServerMsg::decode(&b, &DecodeLimits::default()) {
                Ok(ServerMsg::Item(i)) => vec![i],
                Ok(ServerMsg::ItemBatch(v)) => v,
                Ok(ServerMsg::Discontinuity {
                    new_seq, new_epoch, ..
                }) => {
                    local.discontinuities += 1;
                    next_seq = Some((new_epoch, new_seq));
                    continue;
                }
                Ok(ServerMsg::SubscriptionClosed { text, .. }) => {
                    return Err(BenchError::Connection(format!(
                        "subscription closed by the broker: {text}"
                    )))
                }
                _ => continue,
            };
            let now = now_ns();
            for it in items {
                match next_seq {
                    Some((e, n)) if e == it.epoch && it.seq < n => local.duplicates += 1,
                    Some((e, n)) if e == it.epoch && it.seq > n => local.gaps += it.seq - n,
                    _ => {}
                }
                if next_seq.is_none_or(|(e, n)| e != it.epoch || it.seq >= n) {
                    next_seq = Some((it.epoch, it.seq + 1));
                }
                if it.payload.len() < PAYLOAD_HEADER_BYTES {
                    continue;
                }
                let p = &it.payload;
                let publisher = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                let pseq = u64::from_le_bytes(p[4..12].try_into().unwrap_or([0; 8]));
                let intended = u64::from_le_bytes(p[12..20].try_into().unwrap_or([0; 8]));
                let last = last_pub.entry(publisher).or_insert(0);
                if pseq < *last {
                    local.reorders += 1;
                }
                *last = (*last).max(pseq);
                if intended >= measure_from && intended < stop_at {
                    local.delivered += 1;
                    local.bytes += p.len() as u64;
                    local
                        .latency
                        .saturating_record(now.saturating_sub(intended).max(1));
                }
            }
        }
        if now_ns() >= deadline_ns {
            break;
        }
        // The socket's read timeout (set once) ends a read that waits past the grace time;
        // no timer is armed per read.
        let read = match stream.read(&mut chunk).await {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => None,
            other => Some(other),
        };
        match read {
            None => {
                if now_ns() >= stop_at {
                    break;
                }
                continue;
            }
            Some(Ok(0)) => {
                return Err(BenchError::Connection(
                    "broker closed a subscriber connection".into(),
                ))
            }
            Some(Ok(n)) => rbuf.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => return Err(BenchError::Connection(e.to_string())),
        }
        // Progress in batches: one shared counter update per read, not per message.
        shared
            .progress
            .delivered
            .fetch_add(local.delivered - reported, Ordering::Relaxed);
        reported = local.delivered;
    }
    shared
        .progress
        .delivered
        .fetch_add(local.delivered - reported, Ordering::Relaxed);
    tally.borrow_mut().merge(&local);
    Ok(())
}

/// A WebSocket connection to the broker (client side).
struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    decoder: ws::Decoder,
}

impl Conn {
    async fn connect(host: &str, path: &str) -> Result<Conn, BenchError> {
        let err = |e: std::io::Error| BenchError::Connection(format!("{host}: {e}"));
        let mut stream = TcpStream::connect(host)
            .await
            .map_err(|e| BenchError::Connection(format!("{host}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let nonce: [u8; 16] = std::array::from_fn(|i| (now_ns() >> (i % 8)) as u8 ^ i as u8);
        let (req, key) = ws::client_request(host, path, nonce, &[]);
        stream.write_all(req.as_bytes()).await.map_err(err)?;
        let mut rbuf = BytesMut::new();
        let mut chunk = [0u8; 1024];
        loop {
            match ws::parse_client_response(&rbuf, &key) {
                Ok(Some(n)) => {
                    let _ = rbuf.split_to(n);
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(BenchError::Connection(format!("upgrade refused: {e}"))),
            }
            let n = stream.read(&mut chunk).await.map_err(err)?;
            if n == 0 {
                return Err(BenchError::Connection("closed during the upgrade".into()));
            }
            rbuf.extend_from_slice(&chunk[..n]);
        }
        let limits = ws::Limits {
            frame_bytes_max: 64 << 20,
            message_bytes_max: 64 << 20,
        };
        Ok(Conn {
            stream,
            rbuf,
            decoder: ws::Decoder::new(Role::Client, limits),
        })
    }

    async fn send(&mut self, m: &ClientMsg) -> Result<(), BenchError> {
        let mut out = BytesMut::new();
        ws::encode_frame(
            &mut out,
            Opcode::Binary,
            true,
            &m.encode_to_vec(),
            Some([7, 7, 7, 7]),
        );
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| BenchError::Connection(e.to_string()))
    }

    async fn subscribe(&mut self, ns: &str, topic: &str) -> Result<(), BenchError> {
        self.send(&ClientMsg::Subscribe {
            request_id: 1,
            namespace: ns.into(),
            topic: topic.into(),
            from: Start::Latest,
        })
        .await?;
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(m) = self
                .decoder
                .decode(&mut self.rbuf)
                .map_err(|e| BenchError::Connection(e.to_string()))?
            {
                if let Message::Binary(b) = m {
                    match ServerMsg::decode(&b, &DecodeLimits::default()) {
                        Ok(ServerMsg::Subscribed { .. }) => return Ok(()),
                        Ok(ServerMsg::Error { text, .. }) => {
                            return Err(BenchError::Connection(format!(
                                "subscribe refused: {text}"
                            )))
                        }
                        _ => {}
                    }
                }
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| BenchError::Connection(e.to_string()))?;
            if n == 0 {
                return Err(BenchError::Connection("closed while subscribing".into()));
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }
}
