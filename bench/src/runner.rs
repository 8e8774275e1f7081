//! The run: threads, workers, the connection storm, publishers and subscribers, the
//! measured window, and the tally.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::clients::{Pub, Sub};
use crate::clock::{clock, now_ns};
use crate::replies::{Acks, Got};
use crate::report::{
    latency_histogram, write_hdr_log, Percentiles, Progress, Report, Tally, LOG_INTERVAL,
};
use crate::scenario::{check, BenchError, Scenario, PAYLOAD_HEADER_BYTES};
use crate::target::{targets, Target};

/// How long subscribers keep reading after the last publish.
const GRACE: Duration = Duration::from_secs(2);
/// Most publishes a publisher puts in one write.
const WRITE_BATCH_MAX: usize = 64;

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
            return Err(e);
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
    // The window's edges are read here, on a plain thread that does no other work (a busy
    // runtime would wake its timers late and shift them).
    let measure_from = go + s.warmup.as_nanos() as u64;
    let stop_at = measure_from + s.duration.as_nanos() as u64;
    let broker_cpu = |pid: u32| cpu_times(&format!("/proc/{pid}/stat"));
    sleep_until_blocking(measure_from);
    let edge0 = (
        now_ns(),
        process_cpu_seconds(),
        s.broker_pid.map(broker_cpu),
    );
    sleep_until_blocking(stop_at);
    let edge1 = (
        now_ns(),
        process_cpu_seconds(),
        s.broker_pid.map(broker_cpu),
    );
    let mut total = Tally::new();
    let mut intervals: Vec<(u64, Histogram<u64>)> = Vec::new();
    for j in joins {
        let (tally, iv) = j.join().map_err(|e| BenchError::Runtime(e.to_string()))??;
        total.merge(&tally);
        intervals.extend(iv);
    }
    let window = (edge1.0.saturating_sub(edge0.0)) as f64 / 1e9;
    let cpu = edge1.1 - edge0.1;
    let (broker_cpu_seconds, broker_system_seconds) = match (edge0.2, edge1.2) {
        (Some(Some(a)), Some(Some(b))) => (
            Some(b.user + b.system - a.user - a.system),
            Some(b.system - a.system),
        ),
        _ => (None, None),
    };
    if let Some(path) = &s.hdr_log {
        write_hdr_log(path, &s.url, measure_from, intervals)?;
    }
    let secs = s.duration.as_secs_f64();
    let q = |p: f64| total.latency.value_at_quantile(p) as f64 / 1000.0;
    let qa = |p: f64| total.ack_latency.value_at_quantile(p) as f64 / 1000.0;
    Ok(Report {
        target: s.url.clone(),
        scenario: Scenario {
            token: None,
            ..s.clone()
        },
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
        ack_latency_us: Percentiles {
            p50: qa(0.5),
            p90: qa(0.9),
            p99: qa(0.99),
            p999: qa(0.999),
            max: total.ack_latency.max() as f64 / 1000.0,
        },
        gaps: total.gaps,
        duplicates: total.duplicates,
        reorders: total.reorders,
        discontinuities: total.discontinuities,
        connect_seconds,
        generator_cpu_seconds: cpu,
        generator_cpu_share: cpu / (window.max(1e-3) * threads as f64),
        broker_cpu_seconds,
        broker_system_seconds,
        window_seconds: window,
    })
}

/// Sleeps this (plain) thread until `t_ns` on the shared clock.
fn sleep_until_blocking(t_ns: u64) {
    let now = now_ns();
    if t_ns > now {
        std::thread::sleep(Duration::from_nanos(t_ns - now));
    }
}

/// A process's CPU seconds in user space and in the kernel.
#[derive(Clone, Copy)]
struct CpuTimes {
    user: f64,
    system: f64,
}

/// CPU seconds of the process whose `stat` file is at `path`; `None` when it cannot be read
/// (the process is gone).
fn cpu_times(path: &str) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    Some(CpuTimes {
        user: ticks(11)? / 100.0,
        system: ticks(12)? / 100.0,
    })
}

/// Seconds of CPU (user + system) this process used, from /proc/self/stat.
fn process_cpu_seconds() -> f64 {
    cpu_times("/proc/self/stat").map_or(0.0, |t| t.user + t.system)
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
    /// The first failure while connecting, as it was (wrapping it again would repeat its
    /// prefix: "connection: connection: ..").
    failed: std::sync::Mutex<Option<BenchError>>,
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
            f.get_or_insert(e.clone());
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
