//! The harness of the multi-process cluster tests (tests/cluster.rs, tests/cluster_membership.rs):
//! real `fanfare` nodes on 127.0.0.1 with ports from the OS, and what their subscribers saw.
//! Each test binary includes it with `#[path = "common/cluster.rs"] mod cluster;` beside
//! `mod common;` and the `eventually` module it uses.
#![allow(dead_code)] // each test binary uses what it needs

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fanfare::client::Client;
use fanfare::proto::{ServerMsg, Start};

/// Fast failure detection for tests (defaults are for real networks).
pub const FAST_SWIM: &str =
    "[cluster]\nprobe_interval_ms = 200\nprobe_timeout_ms = 80\nsuspect_timeout_ms = 700\n";

/// This test process's scratch directory.
pub fn test_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fanfare-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `fanfare serve` process in the cluster, killed when dropped.
pub struct Node {
    /// Its node id.
    pub id: String,
    /// The process.
    pub child: Child,
    /// Its client-facing (HTTP and WebSocket) address.
    pub http: SocketAddr,
    /// Its cluster (gossip and link) address.
    pub cluster: SocketAddr,
}

impl Node {
    /// Starts node `id` with `roles`, joining through `seeds`; `cluster` fixes its cluster
    /// address (a restart), else the OS picks a port.
    pub fn start(id: &str, roles: &str, seeds: &[SocketAddr], cluster: Option<SocketAddr>) -> Node {
        Node::start_with(id, roles, seeds, cluster, "")
    }

    /// [`Node::start`] with `extra` settings after the `[cluster]` table's timings.
    pub fn start_with(
        id: &str,
        roles: &str,
        seeds: &[SocketAddr],
        cluster: Option<SocketAddr>,
        extra: &str,
    ) -> Node {
        Node::start_config(id, roles, seeds, cluster, &format!("{FAST_SWIM}{extra}"))
    }

    /// [`Node::start`] with `config` as its whole settings file.
    pub fn start_config(
        id: &str,
        roles: &str,
        seeds: &[SocketAddr],
        cluster: Option<SocketAddr>,
        config: &str,
    ) -> Node {
        let dir = test_dir();
        let cfg = dir.join(format!("{id}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let listen = cluster.map_or("127.0.0.1:0".to_owned(), |a| a.to_string());
        let mut cmd = crate::common::serve_command();
        cmd.args(["--config", cfg.to_str().unwrap()]).args([
            "--node-id",
            id,
            "--roles",
            roles,
            "--cluster-listen",
            &listen,
        ]);
        for s in seeds {
            cmd.args(["--seed", &s.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("fanfare runs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let http: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        // "fanfare cluster node ID (ROLES) on ADDR"
        let cluster: SocketAddr = line.split_whitespace().last().unwrap().parse().unwrap();
        // Keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        Node {
            id: id.to_owned(),
            child,
            http,
            cluster,
        }
    }

    /// Its WebSocket URL.
    pub fn ws(&self) -> String {
        format!("ws://{}/v1/ws", self.http)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// The body of a GET of `path` on its HTTP address.
    pub fn get(&self, path: &str) -> String {
        http_get(self.http, path)
    }

    /// Sum of a metric over shards.
    pub fn metric(&self, name: &str) -> u64 {
        self.get("/metrics")
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    }

    /// A metric per shard.
    pub fn metric_by_shard(&self, name: &str) -> Vec<u64> {
        self.get("/metrics")
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .collect()
    }

    /// Topics this node owns.
    pub fn topics(&self) -> BTreeSet<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.get("/v1/admin/topics?limit=10000")).unwrap();
        v["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Ids of the members this node sees.
    pub fn members(&self) -> BTreeSet<String> {
        let v: serde_json::Value = match serde_json::from_str(&self.get("/v1/admin/cluster")) {
            Ok(v) => v,
            Err(_) => return BTreeSet::new(),
        };
        v["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The body of a GET of `path` on `addr` (empty if there is none within 5 s).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Storage nodes and routers.
pub struct Cluster {
    /// The storage nodes (`s1`, `s2`, `s3` from [`Cluster::start`]).
    pub storage: Vec<Node>,
    /// The routers (`r1`, `r2` from [`Cluster::start`]).
    pub routers: Vec<Node>,
}

impl Cluster {
    /// Three storage nodes and two routers, joined through `s1`, once every one sees all.
    pub fn start() -> Cluster {
        let s1 = Node::start("s1", "storage", &[], None);
        let seed = [s1.cluster];
        let mut storage = vec![s1];
        storage.push(Node::start("s2", "storage", &seed, None));
        storage.push(Node::start("s3", "storage", &seed, None));
        let routers = vec![
            Node::start("r1", "router", &seed, None),
            Node::start("r2", "router", &seed, None),
        ];
        let c = Cluster { storage, routers };
        c.wait_members(&["r1", "r2", "s1", "s2", "s3"]);
        c
    }

    /// Waits until every running node sees exactly `ids`.
    pub fn wait_members(&self, ids: &[&str]) {
        let want: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
        for n in self.routers.iter().chain(&self.storage) {
            if !want.contains(&n.id) {
                continue;
            }
            crate::eventually::eventually(
                &format!("{} to see {want:?}", n.id),
                Duration::from_secs(20),
                || n.members() == want,
            );
        }
    }
}

/// What a subscriber saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// (epoch, seq, payload) in arrival order.
    pub items: Vec<(u64, u64, String)>,
    /// (last_seq, new_seq, new_epoch).
    pub discontinuities: Vec<(u64, u64, u64)>,
}

/// A client whose reads give up after 10 s (a test fails rather than hangs).
pub fn connect(url: &str) -> Client {
    let c = Client::connect(url).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// A client subscribed to `t/topic` from `from`, its reads then giving up after 100 ms.
pub fn subscribe(url: &str, topic: &str, from: Start) -> Client {
    let mut c = connect(url);
    match c.subscribe("t", topic, from).unwrap() {
        ServerMsg::Subscribed { .. } => {}
        m => panic!("not subscribed: {m:?}"),
    }
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    c
}

/// Reads until `n` items arrived (or 5 s passed), then a little more for extras.
pub fn read_items(c: &mut Client, seen: &mut Seen, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.items.len() < n && Instant::now() < deadline {
        if let Ok(m) = c.recv() {
            record(m, seen);
        }
    }
    drain(c, seen, Duration::from_millis(50));
}

/// Reads what arrives until `quiet` passes with nothing new.
pub fn drain(c: &mut Client, seen: &mut Seen, quiet: Duration) {
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        // An error is the read timeout: nothing arrived.
        if let Ok(m) = c.recv() {
            last = Instant::now();
            record(m, seen);
        }
    }
}

/// Adds what `m` carries (items, a discontinuity) to `seen`.
pub fn record(m: ServerMsg, seen: &mut Seen) {
    match m {
        ServerMsg::Item(i) => seen.items.push((
            i.epoch,
            i.seq,
            String::from_utf8_lossy(&i.payload).into_owned(),
        )),
        ServerMsg::ItemBatch(items) => {
            for i in items {
                seen.items.push((
                    i.epoch,
                    i.seq,
                    String::from_utf8_lossy(&i.payload).into_owned(),
                ))
            }
        }
        ServerMsg::Discontinuity {
            last_seq,
            new_seq,
            new_epoch,
            ..
        } => seen.discontinuities.push((last_seq, new_seq, new_epoch)),
        _ => {}
    }
}

/// Within each epoch, sequences are consecutive; epochs change only at a discontinuity.
pub fn assert_in_order(topic: &str, seen: &Seen) {
    let mut epochs = 0;
    let mut prev: Option<(u64, u64)> = None;
    for &(e, s, _) in &seen.items {
        match prev {
            Some((pe, ps)) if pe == e => {
                assert_eq!(
                    s,
                    ps + 1,
                    "{topic}: gap or reorder within epoch {e}: {seen:?}"
                )
            }
            _ => epochs += 1,
        }
        prev = Some((e, s));
    }
    assert!(
        epochs <= seen.discontinuities.len() + 1,
        "{topic}: epoch changed without a discontinuity: {seen:?}"
    );
}
