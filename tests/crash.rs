//! The real binary, stopped again and again on the same data dir, keeps every acknowledged
//! publish (issue 29).
//!
//! `fanfare serve --shards 2 --no-pin --data-dir DIR --fsync always` (unpinned: the shards
//! share whatever cores the machine has) takes acknowledged publishes from WebSocket
//! publishers (several per topic, a window of publishes in flight each, payloads that name
//! their topic, publisher and counter) on topics of both shards, with a live subscriber per
//! topic; at a random moment it is stopped, by SIGTERM or kill -9 (a mixed run has both), and
//! started again on the same data dir (on a new port: a kill -9'd process's sockets may
//! linger). After each restart, and once more at the end, every topic is read back from
//! `(epoch, 1)` and checked (`crash/model.rs`): every acknowledged message is at the
//! `(epoch, seq)` its ack named with its exact payload; every message a subscriber received is
//! still where it was; nothing is stored twice, nothing is missing in between, no epoch changed,
//! no discontinuity. A publish in flight at the stop may be kept or not, but only once: each
//! carries an idempotency key, and is sent again after the restart (as `AsyncClient` does),
//! where it must land once; a publish refused (`ShuttingDown`) must not have been stored.
//!
//! The run is seeded (stop moments, SIGTERM or kill -9): the seed is printed, and
//! `CRASH_SEED=<seed>` replays the same choices. The same test is the soak
//! (`bench/crash-soak.sh`); the environment sets its size:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CRASH_SEED` | the clock | the seed |
//! | `CRASH_CYCLES` | 7 | restarts under load |
//! | `CRASH_LOAD_MS` | `2000-3500` | load before each stop, ms (a range: drawn each cycle) |
//! | `CRASH_KILL` | `mixed` | `mixed` (SIGTERM or kill -9, even odds, at least one of each), `kill9` or `term` |
//! | `CRASH_TOPICS` | 4 | topics (alternating between the 2 shards) |
//! | `CRASH_PUBLISHERS` | 2 | publishers per topic |
//! | `CRASH_WINDOW` | 32 | publishes in flight per publisher |
//! | `CRASH_GENERATION` | 0 | cycles per set of topics (0: one set), so a long soak's read-backs stay short |
//! | `CRASH_SEGMENT_BYTES` | 4194304 | segment size: segments fill and roll during the run |
//! | `CRASH_KEYS` | 1 | publishes carry idempotency keys, and what got no answer is sent again after the restart, as `AsyncClient` does (0: no keys, no retries) |
//! | `CRASH_FSYNC` | `always` | the broker's `--fsync`: `never` acknowledges after the write, which a kill -9 keeps too |
//! | `CRASH_BIN` | this build's | the `fanfare` binary to test (another build, say) |
//! | `CRASH_DIR` | the target's tmp dir | where the data dir goes (a real filesystem, not tmpfs) |

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use fanfare::proto::{Durability, Start};

mod common;
#[path = "crash/model.rs"]
mod model;
#[path = "crash/wire.rs"]
mod wire;

use model::{Rng, Topic, Verdict, NAMESPACE};

/// How long a broker may take to start: it reads its whole log back first, which takes
/// longer as a soak's log grows.
const START_MAX: Duration = Duration::from_secs(600);
/// How long a broker may take to exit after SIGTERM (it drains for up to 5 s).
const STOP_MAX: Duration = Duration::from_secs(60);
/// How long reading back every topic may take.
const READ_BACK_MAX: Duration = Duration::from_secs(300);

/// The run's size and choices (see the module docs).
struct Params {
    seed: u64,
    cycles: u64,
    load_ms: (u64, u64),
    kill: String,
    topics: usize,
    publishers: usize,
    window: usize,
    generation: u64,
    segment_bytes: u64,
    keyed: bool,
    fsync: String,
    bin: Option<PathBuf>,
    dir: PathBuf,
}

impl Params {
    /// What every ack must say.
    fn durability(&self) -> Durability {
        if self.fsync == "always" {
            Durability::Synced
        } else {
            Durability::Written
        }
    }

    fn from_env() -> Params {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let num = |name: &str, default: u64| {
            var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
            })
        };
        let seed = num(
            "CRASH_SEED",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        );
        let load = var("CRASH_LOAD_MS").unwrap_or_else(|| "2000-3500".to_owned());
        let load_ms = match load.split_once('-') {
            Some((a, b)) => (a.parse().ok(), b.parse().ok()),
            None => (load.parse().ok(), load.parse().ok()),
        };
        let (Some(lo), Some(hi)) = load_ms else {
            panic!("CRASH_LOAD_MS={load}: want MS or MIN-MAX");
        };
        assert!(lo <= hi && hi > 0, "CRASH_LOAD_MS={load}");
        let kill = var("CRASH_KILL").unwrap_or_else(|| "mixed".to_owned());
        assert!(
            ["mixed", "kill9", "term"].contains(&kill.as_str()),
            "CRASH_KILL={kill}: want mixed, kill9 or term"
        );
        let fsync = var("CRASH_FSYNC").unwrap_or_else(|| "always".to_owned());
        assert!(
            ["always", "never"].contains(&fsync.as_str()),
            "CRASH_FSYNC={fsync}: want always or never"
        );
        let dir = var("CRASH_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
        Params {
            seed,
            cycles: num("CRASH_CYCLES", 7),
            load_ms: (lo, hi),
            kill,
            topics: num("CRASH_TOPICS", 4) as usize,
            publishers: num("CRASH_PUBLISHERS", 2) as usize,
            window: num("CRASH_WINDOW", 32) as usize,
            generation: num("CRASH_GENERATION", 0),
            segment_bytes: num("CRASH_SEGMENT_BYTES", 4 << 20),
            keyed: num("CRASH_KEYS", 1) != 0,
            fsync,
            bin: var("CRASH_BIN").map(PathBuf::from),
            dir: dir.join(format!("crash-{}-{seed}", std::process::id())),
        }
    }
}

/// A running broker; killed (SIGKILL) if dropped while running.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The files of a run: the data dir, the settings, the brokers' log.
struct Run {
    bin: Option<PathBuf>,
    fsync: String,
    data: PathBuf,
    settings: PathBuf,
    log: PathBuf,
}

impl Run {
    /// Starts a broker on the run's data dir; its log lines go to the run's log, after
    /// `marker`.
    fn start(&self, marker: &str) -> Broker {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file");
        writeln!(log, "===== {marker}").unwrap();
        let mut cmd = match &self.bin {
            // The same arguments as `common::serve_command`, for another build.
            Some(bin) => {
                let mut c = Command::new(bin);
                c.args([
                    "serve",
                    "--no-pin",
                    "--shards",
                    "2",
                    "--listen",
                    "127.0.0.1:0",
                ]);
                c
            }
            None => common::serve_command(),
        };
        let mut child = cmd
            .arg("--config")
            .arg(&self.settings)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--fsync", &self.fsync])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("fanfare runs");
        // The first line comes once every shard read its log back, or never (the process
        // exits, or hangs): read on a thread, waited for with a deadline.
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
            // Drain the rest ("fanfare stopped") so the broker never blocks on a full pipe.
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let line = rx.recv_timeout(START_MAX).unwrap_or_default();
        let Some(addr) = line.split_whitespace().nth(3).and_then(|a| a.parse().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{marker}: the broker did not start within {START_MAX:?} ({line:?}); its log: {}\n{}",
                self.log.display(),
                self.log_tail()
            );
        };
        Broker { child, addr }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The brokers' log lines of note: warnings and errors about the log (a cut tail, damage,
    /// a gap) and recovery writes, after the marker of the start they belong to. Known noise
    /// (no authentication; glommio's iopoll probe) is left out.
    fn log_notes(&self) -> Vec<String> {
        const NOISE: [&str; 2] = ["authentication is OFF", "probing iopoll support"];
        let mut marker = "";
        let mut out = Vec::new();
        for l in std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
        {
            if l.starts_with("=====") {
                marker = l;
                continue;
            }
            let note =
                l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("recovery write");
            if note && !NOISE.iter().any(|n| l.contains(n)) {
                out.push(format!("{marker}: {l}"));
            }
        }
        out
    }
}

/// Stops `b`: kill -9, or SIGTERM and a clean exit (which must come in time).
fn stop(mut b: Broker, kill9: bool) -> Result<(), String> {
    if kill9 {
        b.child.kill().map_err(|e| format!("kill -9: {e}"))?;
        b.child.wait().map_err(|e| format!("wait: {e}"))?;
        return Ok(());
    }
    let s = common::signal_and_wait(&mut b.child, "-TERM", STOP_MAX);
    if s.success() {
        Ok(())
    } else {
        Err(format!("exit after SIGTERM: {s}"))
    }
}

/// `n` topic names for generation `g`, alternating between the shards of a 2-shard broker.
fn topic_names(g: u64, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            (0..)
                .map(|k| format!("g{g}-t{i}-{k}"))
                .find(|name| {
                    let key = format!("{NAMESPACE}/{name}");
                    usize::from(fanfare::core::placement::shard_for(key.as_bytes(), 2)) == i % 2
                })
                .expect("a name for each shard")
        })
        .collect()
}

/// Reads back `topics` from the broker at `url` and checks them; the heads read.
fn read_back_all(url: &str, topics: &mut [Topic], v: &mut Verdict) -> Vec<u64> {
    let deadline = Instant::now() + READ_BACK_MAX;
    let mut heads = Vec::new();
    for t in topics.iter_mut() {
        match wire::read_back(url, &t.name, t.epoch, deadline) {
            Ok(rb) => {
                heads.push(rb.head);
                t.read_back(&rb, v);
            }
            Err(e) => {
                heads.push(0);
                v.fail(|t| &mut t.other, format!("{}: read-back: {e}", t.name));
            }
        }
    }
    heads
}

/// What one cycle's load did.
struct Load {
    acked: u64,
    refused: u64,
    ends: Vec<String>,
}

/// Runs the publishers and live subscribers of `topics` against `b` for `load`, stops `b`
/// (kill -9 or SIGTERM), and records what they saw in the model.
fn load_and_stop(
    b: Broker,
    p: &Params,
    topics: &mut [Topic],
    load: Duration,
    kill9: bool,
    v: &mut Verdict,
) -> Load {
    let url = format!("ws://{}/v1/ws", b.addr);
    let ready = Barrier::new(topics.len() * (p.publishers + 1) + 1);
    let plans: Vec<(String, u32, wire::Plan)> = topics
        .iter_mut()
        .flat_map(|t| {
            (0..p.publishers)
                .map(|i| (t.name.clone(), i as u32, t.plan(i, p.keyed, p.durability())))
                .collect::<Vec<_>>()
        })
        .collect();
    let (lives, pubs, stopped) = std::thread::scope(|s| {
        let lives: Vec<_> = topics
            .iter()
            .map(|t| {
                let from = t
                    .live_from
                    .map_or(Start::Latest, |(epoch, seq)| Start::At { epoch, seq });
                let (url, name, ready) = (&url, &t.name, &ready);
                s.spawn(move || wire::live(url, name, from, ready))
            })
            .collect();
        let pubs: Vec<_> = plans
            .iter()
            .map(|(name, i, plan)| {
                let (url, ready) = (&url, &ready);
                s.spawn(move || wire::publish(url, name, *i, plan, p.window, ready))
            })
            .collect();
        ready.wait();
        // The load runs for `load`: a moment drawn from the seed, not a wait for anything.
        std::thread::sleep(load);
        let stopped = stop(b, kill9);
        let lives: Vec<_> = lives.into_iter().map(|h| h.join().unwrap()).collect();
        let pubs: Vec<_> = pubs.into_iter().map(|h| h.join().unwrap()).collect();
        (lives, pubs, stopped)
    });
    if let Err(e) = stopped {
        v.fail(|t| &mut t.other, format!("stop: {e}"));
    }
    let mut out = Load {
        acked: 0,
        refused: 0,
        ends: Vec::new(),
    };
    for (t, live) in topics.iter_mut().zip(&lives) {
        match live.from {
            Some(from) => t.delivered(from, &live.items, &live.discontinuities, v),
            None => v.fail(
                |x| &mut x.other,
                format!("{}: live subscriber: {}", t.name, live.end),
            ),
        }
        out.ends.push(format!("sub {}: {}", t.name, live.end));
    }
    for (k, r) in pubs.iter().enumerate() {
        let (t, i) = (&mut topics[k / p.publishers], k % p.publishers);
        t.sent(i, r.upto);
        t.unanswered(i, &r.unanswered);
        for &(counter, epoch, seq) in &r.acked {
            t.acked(i, counter, epoch, seq, v);
        }
        for (counter, _) in &r.refused {
            t.refused(i, *counter);
        }
        if let Some((_, why)) = r.refused.last() {
            let n = r.refused.len();
            out.ends
                .push(format!("pub {}/{i}: {n} refused, the last: {why}", t.name));
        }
        if r.other_durability > 0 {
            v.fail(
                |x| &mut x.other,
                format!(
                    "{}/{i}: {} acks not {:?}",
                    t.name,
                    r.other_durability,
                    p.durability()
                ),
            );
        }
        out.acked += r.acked.len() as u64;
        out.refused += r.refused.len() as u64;
        out.ends.push(format!("pub {}/{i}: {}", t.name, r.end));
    }
    out
}

#[test]
fn acknowledged_publishes_survive_sigterm_and_kill_9() {
    let p = Params::from_env();
    println!(
        "crash test seed {0}: replay with CRASH_SEED={0} (and the same CRASH_* settings); {1} cycles, load {2:?} ms, stops {3}",
        p.seed, p.cycles, p.load_ms, p.kill
    );
    let _ = std::fs::remove_dir_all(&p.dir);
    std::fs::create_dir_all(&p.dir).expect("the run's dir");
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&p.dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert!(
        !["tmpfs", "ramfs"].contains(&fs.as_str()),
        "{} is on {fs}: the log needs a real filesystem (O_DIRECT); set CRASH_DIR",
        p.dir.display()
    );
    let run = Run {
        bin: p.bin.clone(),
        fsync: p.fsync.clone(),
        data: p.dir.join("data"),
        settings: p.dir.join("fanfare.toml"),
        log: p.dir.join("serve.log"),
    };
    // Retention never deletes what the test reads back.
    std::fs::write(
        &run.settings,
        format!(
            "[storage]\nsegment_bytes = {}\nretention_bytes = {}\ntopic_retention_bytes = {}\ntopic_retention_messages = {}\n",
            p.segment_bytes,
            1u64 << 40,
            1u64 << 40,
            1u64 << 40
        ),
    )
    .unwrap();

    let mut rng = Rng(p.seed);
    // How each cycle stops: kill -9 or SIGTERM; mixed runs have both.
    let mut kinds: Vec<bool> = (0..p.cycles)
        .map(|_| match p.kill.as_str() {
            "kill9" => true,
            "term" => false,
            _ => rng.range(0, 1) == 1,
        })
        .collect();
    if p.kill == "mixed" && p.cycles >= 2 && kinds.iter().all(|&k| k == kinds[0]) {
        let i = rng.range(0, p.cycles - 1) as usize;
        kinds[i] = !kinds[i];
    }
    let mut v = Verdict::default();
    let mut generations: Vec<Vec<Topic>> = Vec::new();
    let t0 = Instant::now();
    for cycle in 0..p.cycles {
        let g = cycle.checked_div(p.generation).unwrap_or(0);
        if generations.len() as u64 <= g {
            let names = topic_names(g, p.topics);
            generations.push(
                names
                    .into_iter()
                    .map(|n| Topic::new(n, p.publishers))
                    .collect(),
            );
        }
        let started = Instant::now();
        let b = run.start(&format!("cycle {cycle}"));
        let start_s = started.elapsed().as_secs_f64();
        let url = format!("ws://{}/v1/ws", b.addr);
        let before = v.totals.clone();
        let started = Instant::now();
        let topics = generations.last_mut().unwrap();
        let heads = read_back_all(&url, topics, &mut v);
        let read_s = started.elapsed().as_secs_f64();
        let load = Duration::from_millis(rng.range(p.load_ms.0, p.load_ms.1));
        let kill9 = kinds[cycle as usize];
        let l = load_and_stop(b, &p, topics, load, kill9, &mut v);
        if l.acked == 0 {
            v.fail(
                |t| &mut t.other,
                format!("cycle {cycle}: no publish acknowledged: {:?}", l.ends),
            );
        }
        v.totals.cycles += 1;
        v.totals.kills += u64::from(kill9);
        println!(
            "cycle {cycle}: started in {start_s:.1} s, read back {heads:?} in {read_s:.1} s; {} after {:.2} s: {} acked, {} refused; failures {} (total {}) [{:.0} s]",
            if kill9 { "kill -9" } else { "SIGTERM" },
            load.as_secs_f64(),
            l.acked,
            l.refused,
            v.totals.broken() - before.broken(),
            v.totals.broken(),
            t0.elapsed().as_secs_f64()
        );
        if v.totals.broken() > before.broken() {
            for e in &l.ends {
                println!("  {e}");
            }
        }
    }
    // The last restart: everything written, every generation, read back once more.
    let b = run.start("final");
    let url = format!("ws://{}/v1/ws", b.addr);
    for topics in &mut generations {
        let heads = read_back_all(&url, topics, &mut v);
        println!("final read-back {heads:?}");
    }
    if let Err(e) = stop(b, false) {
        v.fail(|t| &mut t.other, format!("final stop: {e}"));
    }
    let t = &v.totals;
    println!(
        "crash-summary: seed={} cycles={} kills={} acked={} unacked_kept={} lost={} delivered_lost={} epoch_changes={} discontinuities={} duplicates={} other={} seconds={:.0}",
        p.seed,
        t.cycles,
        t.kills,
        t.acked,
        t.unacked_kept,
        t.lost,
        t.delivered_lost,
        t.epoch_changes,
        t.discontinuities,
        t.duplicates,
        t.other,
        t0.elapsed().as_secs_f64()
    );
    for n in run.log_notes() {
        println!("broker: {n}");
    }
    if !t.clean() {
        panic!(
            "seed {}: promises broken ({t:?}); data and log kept in {}:\n{}",
            p.seed,
            p.dir.display(),
            v.failures.join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&p.dir);
}
