//! `fanfare bench`: the load generator's command line (the generator is fanfare-bench).

use std::path::PathBuf;

use anyhow::{Context, Result};

/// `fanfare bench`'s flags; a scenario file sets the same keys, and flags override it.
#[derive(clap::Args, Default)]
pub struct BenchArgs {
    /// Scenario file (TOML, keys as the flags with underscores); flags override it.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The broker: ws://, wss:// (Fanfare), redis://, nats:// (peers); default
    /// ws://127.0.0.1:7070/v1/ws.
    #[arg(long)]
    url: Option<String>,
    /// Fanfare transport: ws (WebSocket, the default; TLS with a wss:// URL), sse or h2.
    #[arg(long)]
    transport: Option<String>,
    /// Connections each generator thread opens at once while connecting (default 64).
    #[arg(long)]
    connect_concurrency: Option<usize>,
    /// Fanfare access token.
    #[arg(long, env = "FANFARE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for wss:// and https://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Do not verify the broker's TLS certificate (test certificates only).
    #[arg(long)]
    insecure: bool,
    /// Write an HdrHistogram interval log of delivery latency (1 s intervals, ns) here.
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Publishing connections (default 1).
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribing connections, one subscription each (default 10).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Topics: subscriber i takes topic i mod topics, publishers cycle over all (default 1).
    #[arg(long)]
    topics: Option<usize>,
    /// Payload bytes (at least 20; default 128).
    #[arg(long)]
    payload: Option<usize>,
    /// Total messages per second; 0 for as fast as the window allows (default 1000).
    #[arg(long)]
    rate: Option<u64>,
    /// Publishes in flight per publisher (default 64).
    #[arg(long)]
    window: Option<usize>,
    /// Measured seconds (default 10).
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds (default 1).
    #[arg(long)]
    warmup: Option<f64>,
    /// New connections per second while connecting (default: as fast as possible).
    #[arg(long)]
    connect_rate: Option<u64>,
    /// Generator threads (default 1).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Give every publish a unique idempotency key (measures the owner's key window).
    #[arg(long)]
    idempotency_keys: bool,
    /// Stored publishes: JetStream (file storage) on nats://, XADD on redis://; a Fanfare
    /// broker stores when it runs with --data-dir.
    #[arg(long)]
    durable: bool,
    /// The broker's process id (same machine): report its CPU time inside the measured window.
    #[arg(long)]
    broker_pid: Option<u32>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    url: Option<String>,
    publishers: Option<usize>,
    subscribers: Option<usize>,
    topics: Option<usize>,
    payload: Option<usize>,
    rate: Option<u64>,
    window: Option<usize>,
    duration: Option<f64>,
    warmup: Option<f64>,
    connect_rate: Option<u64>,
    threads: Option<usize>,
    transport: Option<String>,
    connect_concurrency: Option<usize>,
}

/// Runs the load test the flags (and the scenario file) describe, printing progress on stderr
/// and the report, scenario first, on stdout.
pub fn bench(a: BenchArgs) -> Result<()> {
    let f: ScenarioFile = match &a.scenario {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )
        .with_context(|| format!("invalid scenario in {}", p.display()))?,
        None => ScenarioFile::default(),
    };
    let d = fanfare_bench::Scenario::default();
    let secs = |v: f64| std::time::Duration::from_secs_f64(v.max(0.0));
    let s = fanfare_bench::Scenario {
        url: a.url.or(f.url).unwrap_or(d.url),
        publishers: a.publishers.or(f.publishers).unwrap_or(d.publishers),
        subscribers: a.subscribers.or(f.subscribers).unwrap_or(d.subscribers),
        topics: a.topics.or(f.topics).unwrap_or(d.topics),
        payload_bytes: a.payload.or(f.payload).unwrap_or(d.payload_bytes),
        rate: match a.rate.or(f.rate) {
            Some(0) => None,
            Some(r) => Some(r),
            None => d.rate,
        },
        window: a.window.or(f.window).unwrap_or(d.window),
        duration: a.duration.or(f.duration).map_or(d.duration, secs),
        warmup: a.warmup.or(f.warmup).map_or(d.warmup, secs),
        connect_rate: a.connect_rate.or(f.connect_rate),
        threads: a.threads.or(f.threads).unwrap_or(d.threads),
        namespace: d.namespace,
        transport: match a.transport.or(f.transport) {
            Some(t) => t.parse().map_err(anyhow::Error::msg)?,
            None => d.transport,
        },
        connect_concurrency: a
            .connect_concurrency
            .or(f.connect_concurrency)
            .unwrap_or(d.connect_concurrency),
        token: a.token,
        ca: a.ca,
        insecure: a.insecure,
        hdr_log: a.hdr_log,
        idempotency_keys: a.idempotency_keys,
        broker_pid: a.broker_pid,
        durable: a.durable,
    };
    let progress = std::sync::Arc::new(fanfare_bench::Progress::default());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (progress, done) = (progress.clone(), done.clone());
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let t0 = std::time::Instant::now();
            let mut last = 0;
            while !done.load(Relaxed) {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let d = progress.delivered.load(Relaxed);
                eprint!(
                    "\r{:>4.0}s  subscribed {:>7}  published {:>10}  delivered {:>12}  ({:>10}/s)   ",
                    t0.elapsed().as_secs_f64(),
                    progress.subscribed.load(Relaxed),
                    progress.published.load(Relaxed),
                    d,
                    d - last
                );
                last = d;
            }
            eprintln!();
        })
    };
    let r = fanfare_bench::run(&s, progress);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ticker.join();
    let r = r?;
    if a.json {
        println!("{}", r.to_json());
    } else {
        print!("{}", r.table());
    }
    Ok(())
}
