//! `fanfare serve --data-dir`: acknowledged publishes survive `kill -9`, and a subscriber
//! resumes after the restart with the same epoch and no discontinuity.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

/// A broker process killed (SIGKILL) when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path) -> (Serve, SocketAddr) {
    // Five messages of history in memory: a resume further back reads from disk (and, with
    // two shards, may cross to the owning shard).
    let mut child = common::serve_command()
        .args(["--history-messages", "5", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fanfare runs");
    let addr = common::listening_addr(&mut child, "");
    (Serve(child), addr)
}

fn fanfare(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fanfare"))
        .args(args)
        .output()
        .expect("fanfare runs")
}

/// `POST path` with `body`: the answer's status line and body.
fn http_publish(addr: SocketAddr, path: &str, body: &str) -> (String, String) {
    common::http_request(addr, &format!("POST {path}"), body)
}

#[test]
fn acknowledged_publishes_survive_kill_9() {
    let data: PathBuf =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (node, addr) = serve(&data);
    let url = format!("ws://{addr}/v1/ws");
    let msgs: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let mut args = vec!["pub", "ns", "kept"];
    args.extend(msgs.iter().map(String::as_str));
    args.extend(["--url", &url]);
    let out = fanfare(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks = String::from_utf8(out.stdout).unwrap();
    assert_eq!(acks.lines().count(), 40, "{acks}");
    let epoch = acks
        .lines()
        .next()
        .unwrap()
        .split_once('-')
        .unwrap()
        .0
        .to_owned();
    // The HTTP answer says how the message was kept.
    let (status, body) = http_publish(addr, "/v1/topics/ns/kept", "m40");
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(
        body,
        format!("{{\"epoch\":{epoch},\"seq\":41,\"durability\":\"synced\"}}")
    );

    // SIGKILL: no shutdown, nothing flushed on the way out.
    drop(node);
    let (node, addr) = serve(&data);
    let url = format!("ws://{addr}/v1/ws");
    let from = format!("{epoch}-1");
    // `timeout`: a subscriber that never gets its 41 messages fails the test, not hangs it.
    let sub = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_fanfare")])
        .args([
            "sub", "ns", "kept", "--from", &from, "--count", "41", "--url", &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = sub.wait_with_output().unwrap();
    let lines: Vec<String> = BufReader::new(&got.stdout[..])
        .lines()
        .map_while(Result::ok)
        .collect();
    let want: Vec<String> = (0..41).map(|i| format!("{epoch}-{} m{i}", i + 1)).collect();
    assert_eq!(
        lines, want,
        "every acknowledged message, same epoch, no discontinuity"
    );
    // And the topic goes on from there.
    let out = fanfare(&["pub", "ns", "kept", "next", "--url", &url]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{epoch}-42")
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&data);
}

/// A log that cannot be written (here: past the file-size limit, `ulimit -f`, as a full disk
/// would be) refuses publishes to its shard's topics with `StorageUnavailable` and a metric;
/// the broker goes on serving, other shards' topics included.
#[test]
fn a_failed_disk_refuses_publishes_and_the_broker_keeps_serving() {
    let data: PathBuf =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let bin = env!("CARGO_BIN_EXE_fanfare");
    // 4 MiB per file: a few dozen 64 KiB messages fit in a segment.
    let script = format!(
        "ulimit -f 4096; exec {bin} serve --no-pin --shards 2 --listen 127.0.0.1:0 --data-dir {}",
        data.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    let addr = common::listening_addr(&mut child, "");
    let node = Serve(child);
    let body = "x".repeat(64 << 10);
    let mut refused = None;
    for i in 0..200 {
        let (status, text) = http_publish(addr, "/v1/topics/ns/full", &body);
        if status.contains("503") {
            refused = Some((i, text));
            break;
        }
        assert!(status.contains("200"), "publish {i}: {status} {text}");
    }
    let (n, text) = refused.expect("the file-size limit is reached within 200 publishes");
    assert!(n > 0, "some publishes fit before the limit");
    assert!(text.contains("storage is unavailable"), "{text}");
    // Refused again, at once: the log failed and stays failed until a restart.
    let (status, _) = http_publish(addr, "/v1/topics/ns/full", "small");
    assert!(status.contains("503"), "{status}");
    // The broker serves on: its health, its metrics, and a topic of the other shard.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).expect("metrics");
    let errors: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("fanfare_engine_storage_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(errors >= 1, "storage_errors counted: {metrics}");
    let other = (0..64).map(|i| format!("other-{i}")).find(|t| {
        let (status, _) = http_publish(addr, &format!("/v1/topics/ns/{t}"), "small");
        status.contains("200")
    });
    assert!(
        other.is_some(),
        "a topic on the other shard still takes publishes"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&data);
}
