//! `fanfare serve --data-dir`: damage to the log costs only the records it covers. Bytes are
//! flipped in a stopped node's segment file at several places (a message's body in the middle,
//! a message's header in the middle, the first record, the last record, a commit record);
//! after each restart (two in a row, with publishes between) every intact record before and
//! after the damage reads back in the same epoch, a reader crossing the hole gets one
//! discontinuity naming exactly the lost sequences, and the topic goes on in its epoch.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

/// A broker on a data dir, one shard (so every topic is in `shard-0`'s log); killed if dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(data: &Path) -> Node {
        let mut child = common::serve_command_with(1, "127.0.0.1:0")
            // Five messages in memory: reads further back come from the log.
            .args(["--history-messages", "5", "--fsync", "always", "--data-dir"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("fanfare runs");
        let addr = common::listening_addr(&mut child, "");
        Node { child, addr }
    }

    /// SIGTERM, and waits for the exit.
    fn stop(mut self) {
        common::signal_and_wait(&mut self.child, "-TERM", Duration::from_secs(20));
    }

    /// The sum over shards of the engine counter `name` (`fanfare_engine_{name}_total`).
    fn counter(&self, name: &str) -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("metrics");
        let prefix = format!("fanfare_engine_{name}_total{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Publishes `msgs` to `ns/topic` (one client, a window of publishes in flight, so the
    /// log writes them in batches of several records): each ack's `(epoch, seq)`.
    fn publish(&self, topic: &str, msgs: &[String]) -> Vec<(u64, u64)> {
        let mut args = vec!["pub".to_owned(), "ns".to_owned(), topic.to_owned()];
        args.extend(msgs.iter().cloned());
        args.extend(["--url".to_owned(), self.url()]);
        let out = Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .args(&args)
            .output()
            .expect("fanfare runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let acks: Vec<(u64, u64)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let (e, s) = l.trim().split_once('-').expect("epoch-seq");
                (e.parse().expect("epoch"), s.parse().expect("seq"))
            })
            .collect();
        assert_eq!(acks.len(), msgs.len());
        acks
    }

    /// `ns/topic` from `(epoch, 1)` until `count` messages came: every line `fanfare sub`
    /// printed (messages as `E-S payload`, discontinuities as one line each).
    fn read(&self, topic: &str, epoch: u64, count: usize) -> Vec<String> {
        let from = format!("{epoch}-1");
        let count = count.to_string();
        // `timeout`: a reader that never gets its messages fails the test, not hangs it.
        let out = Command::new("timeout")
            .args(["30", env!("CARGO_BIN_EXE_fanfare")])
            .args(["sub", "ns", topic, "--from", &from, "--count", &count])
            .args(["--url", &self.url()])
            .stderr(Stdio::null())
            .output()
            .expect("fanfare runs");
        BufReader::new(&out.stdout[..])
            .lines()
            .map_while(Result::ok)
            .collect()
    }
}

fn payload(topic: &str, i: u64) -> String {
    // No zero bytes: damage to a payload is never mistaken for a torn write.
    format!("{topic}-{i:05}-{}", "x".repeat(60))
}

/// The lines a reader from `(epoch, 1)` gets for messages `1..=n` of `topic` with
/// `lost` (inclusive ranges of sequences) missing, each range as one discontinuity.
fn expected(topic: &str, epoch: u64, n: u64, lost: &[(u64, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seq = 1;
    while seq <= n {
        if let Some(&(a, b)) = lost.iter().find(|(a, _)| *a == seq) {
            out.push(format!(
                "discontinuity: missed after {epoch}-{}, continuing at {epoch}-{}",
                a - 1,
                b + 1
            ));
            seq = b + 1;
            continue;
        }
        out.push(format!("{epoch}-{seq} {}", payload(topic, seq)));
        seq += 1;
    }
    out
}

/// One record of a segment file as the format lays it out (core/src/log/record.rs): where it
/// starts, its kind (1 message, 2 commit), its topic and its payload.
struct Rec {
    at: usize,
    kind: u8,
    topic: String,
    payload: Vec<u8>,
}

fn records(seg: &[u8]) -> Vec<Rec> {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([seg[at], seg[at + 1]]));
    let mut out = Vec::new();
    let mut at = 0;
    while at + 48 <= seg.len() && &seg[at..at + 4] == b"FFLR" {
        let body = u32::from_le_bytes(seg[at + 8..at + 12].try_into().unwrap()) as usize;
        let (tl, pl, kl) = (u16_at(at + 14), u16_at(at + 40), u16_at(at + 42));
        let b = at + 48;
        out.push(Rec {
            at,
            kind: seg[at + 12],
            topic: String::from_utf8_lossy(&seg[b..b + tl]).into_owned(),
            payload: seg[b + tl + pl + kl..b + body].to_vec(),
        });
        at += (48 + body).next_multiple_of(8);
    }
    out
}

const A: u64 = 500;
const B: u64 = 50;
const C: u64 = 20;

/// A node whose log holds `ns/c` (C messages, then idle), `ns/a` (A messages, in chunks),
/// and `ns/b` (B messages, between a's chunks), stopped cleanly: the data dir, and the epoch
/// of each topic.
fn written(name: &str) -> (PathBuf, [u64; 3]) {
    let data = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("damage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let node = Node::start(&data);
    let msgs = |t: &str, r: std::ops::RangeInclusive<u64>| -> Vec<String> {
        r.map(|i| payload(t, i)).collect()
    };
    let ec = node.publish("c", &msgs("c", 1..=C))[0].0;
    let mut ea = 0;
    for chunk in 0..10 {
        let from = chunk * (A / 10) + 1;
        ea = node.publish("a", &msgs("a", from..=from + A / 10 - 1))[0].0;
        if chunk == 4 {
            node.publish("b", &msgs("b", 1..=B));
        }
    }
    node.stop();
    let seg = std::fs::read(segment(&data)).expect("segment 0");
    let eb = epoch_of(&seg, "ns/b");
    assert_eq!(epoch_of(&seg, "ns/a"), ea);
    (data, [ea, eb, ec])
}

fn segment(data: &Path) -> PathBuf {
    data.join("shard-0").join(format!("{:020}.seg", 0))
}

fn epoch_of(seg: &[u8], topic: &str) -> u64 {
    let r = records(seg)
        .into_iter()
        .find(|r| r.kind == 1 && r.topic == topic)
        .expect("a record of the topic");
    u64::from_le_bytes(seg[r.at + 16..r.at + 24].try_into().unwrap())
}

/// Flips 8 bytes at `at` of segment 0.
fn flip(data: &Path, at: usize) {
    let path = segment(data);
    let mut seg = std::fs::read(&path).expect("segment 0");
    for b in &mut seg[at..at + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, seg).expect("write segment 0");
}

/// Where the record of `topic`'s message `seq` starts, and where its payload does.
fn place(data: &Path, topic: &str, seq: u64) -> (usize, usize) {
    let seg = std::fs::read(segment(data)).expect("segment 0");
    let want = payload(topic, seq).into_bytes();
    let r = records(&seg)
        .into_iter()
        .find(|r| r.kind == 1 && r.payload == want)
        .expect("the record");
    (r.at, r.at + 48 + 2 + topic.len() + 2)
}

/// Damage at `at`; then, twice: restart, read every topic back, publish one more to `a`.
/// `lost_a`/`lost_c`: the sequences of a and c the damage takes.
fn check(name: &str, at: impl Fn(&Path) -> usize, lost_a: &[(u64, u64)], lost_c: &[(u64, u64)]) {
    let (data, [ea, eb, ec]) = written(name);
    flip(&data, at(&data));
    for (round, a_next) in (0..2).zip(A + 1..) {
        let node = Node::start(&data);
        // The damage is found (at every start: it stays on disk), costs exactly the lost
        // sequences, and no topic a new epoch.
        assert!(node.counter("storage_damaged") >= 1, "round {round}: found");
        let lost: u64 = lost_a.iter().chain(lost_c).map(|(x, y)| y - x + 1).sum();
        assert_eq!(node.counter("storage_renewed_topics"), 0, "round {round}");
        if lost_c.is_empty() {
            // (A topic's lost first message is no hole: its sequence simply starts later.)
            assert_eq!(node.counter("storage_lost_messages"), lost, "round {round}");
        }
        // One more of a, so that a reader sees what follows a lost tail too.
        let acks = node.publish("a", &[payload("a", a_next)]);
        assert_eq!(acks, vec![(ea, a_next)], "round {round}: a keeps its epoch");
        let lost: u64 = lost_a.iter().map(|(x, y)| y - x + 1).sum();
        let got = node.read("a", ea, (a_next - lost) as usize);
        let want = expected("a", ea, a_next, lost_a);
        assert_eq!(got, want, "round {round}: ns/a ({name})");
        let got = node.read("b", eb, B as usize);
        assert_eq!(
            got,
            expected("b", eb, B, &[]),
            "round {round}: ns/b ({name})"
        );
        let lost: u64 = lost_c.iter().map(|(x, y)| y - x + 1).sum();
        let got = node.read("c", ec, (C - lost) as usize);
        assert_eq!(
            got,
            expected("c", ec, C, lost_c),
            "round {round}: ns/c ({name})"
        );
        node.stop();
    }
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_damaged_body_in_the_middle_costs_that_message_alone() {
    check("body", |d| place(d, "a", 250).1 + 10, &[(250, 250)], &[]);
}

#[test]
fn a_damaged_header_in_the_middle_costs_that_message_alone() {
    // The header's checksum fails: nothing names the record, but its batch's commit record
    // counts one message lost, and a's sequence shows which.
    check("header", |d| place(d, "a", 250).0 + 16, &[(250, 250)], &[]);
}

#[test]
fn a_damaged_first_record_costs_that_message_alone() {
    check("first", |_| 16, &[], &[(1, 1)]);
}

#[test]
fn a_damaged_last_record_costs_that_message_alone() {
    check("last", |d| place(d, "a", A).1 + 10, &[(A, A)], &[]);
}

#[test]
fn a_damaged_commit_record_costs_nothing() {
    check(
        "commit",
        |d| {
            let seg = std::fs::read(segment(d)).expect("segment 0");
            let commits: Vec<usize> = records(&seg)
                .iter()
                .filter(|r| r.kind == 2)
                .map(|r| r.at)
                .collect();
            commits[commits.len() / 2] + 16
        },
        &[],
        &[],
    );
}
