//! A node restarted on the port it had listens at the first attempt (issue 29): after HTTP
//! requests with `Connection: close`, which the server closes first (as curl's are), TIME-WAIT
//! sockets sit on the server's own port for a minute; a restart after SIGTERM and one after
//! kill -9 must still listen and answer. The same for a cluster node's port (TCP node links,
//! UDP gossip).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

mod common;

/// Failure detection fast enough for a test (the defaults are for real networks).
const FAST_SWIM: &str =
    "[cluster]\nprobe_interval_ms = 200\nprobe_timeout_ms = 80\nsuspect_timeout_ms = 700\n";

/// The longest any awaited condition may take before the test fails.
const WAIT_MAX: Duration = Duration::from_secs(20);

/// Publishes per burst of traffic: each leaves one TIME-WAIT socket on the server's port.
const PUBLISHES: usize = 8;

/// TCP states as /proc/net/tcp numbers them.
const TCP_TIME_WAIT: u8 = 0x06;
const TCP_LISTEN: u8 = 0x0A;

/// A `fanfare serve` process, killed with SIGKILL if it still runs when dropped.
struct Node {
    child: Child,
    http: SocketAddr,
    /// Its cluster address, when started with `--cluster-listen`.
    cluster: Option<SocketAddr>,
}

impl Node {
    /// Runs `cmd` once and reads the addresses it prints. There is no second attempt: a
    /// restart that cannot listen fails the test, with the node's log in the message.
    fn start(mut cmd: Command, name: &str, clustered: bool) -> Node {
        let log = scratch(&format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("a log file");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("fanfare runs");
        let mut out = BufReader::new(child.stdout.take().expect("its stdout"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        if !line.starts_with("fanfare listening") {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{name} did not start: {line:?}; its log:\n{log}");
        }
        // "fanfare listening on ADDR (...)"
        let http = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        let cluster = clustered.then(|| {
            line.clear();
            out.read_line(&mut line).unwrap();
            // "fanfare cluster node ID (ROLES) on ADDR"
            line.split_whitespace().last().unwrap().parse().unwrap()
        });
        // Keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        Node {
            child,
            http,
            cluster,
        }
    }

    /// SIGTERM, then waits for the process to exit (it drains first).
    fn terminate(&mut self) -> ExitStatus {
        common::signal_and_wait(&mut self.child, "-TERM", WAIT_MAX)
    }

    /// SIGKILL, and the process reaped.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A path in this test process's scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("restart-port-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// TCP sockets (IPv4 and IPv6, any process) whose local port is `port` and state `state`.
fn sockets_on(port: u16, state: u8) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|l| {
                    let mut f = l.split_whitespace();
                    // "sl local_address rem_address st ...", addresses as HEXIP:HEXPORT.
                    let local = f.nth(1).and_then(|a| a.rsplit(':').next());
                    let st = f.nth(1);
                    local.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
                        && st.and_then(|s| u8::from_str_radix(s, 16).ok()) == Some(state)
                })
                .count()
        })
        .sum()
}

/// Publishes `payload` to `restart/port` through `addr`: the status line and the epoch acked.
fn publish(addr: SocketAddr, payload: &str) -> (String, Option<u64>) {
    let (status, body) = common::http_request(addr, "POST /v1/topics/restart/port", payload);
    let epoch = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["epoch"].as_u64());
    (status, epoch)
}

/// [`PUBLISHES`] publishes and a health check, each answered 200 and closed by the server;
/// returns once their TIME-WAIT sockets are on the server's port.
fn traffic(addr: SocketAddr) {
    for i in 0..PUBLISHES {
        let (status, epoch) = publish(addr, &format!("m{i}"));
        assert_eq!(status, "HTTP/1.1 200 OK", "publish {i} to {addr}");
        assert!(epoch.is_some(), "publish {i} acknowledged");
    }
    assert_eq!(
        common::http_request(addr, "GET /healthz", ""),
        ("HTTP/1.1 200 OK".to_owned(), "ok".to_owned())
    );
    common::eventually::eventually("TIME-WAIT sockets on the server's port", WAIT_MAX, || {
        sockets_on(addr.port(), TCP_TIME_WAIT) >= PUBLISHES
    });
}

/// Checks what a restart on `port` meets once the old process is gone: nothing listens any
/// more, and the old connections' TIME-WAIT sockets are still there.
fn assert_released_with_time_wait(port: u16, after: &str) {
    assert_eq!(
        sockets_on(port, TCP_LISTEN),
        0,
        "port {port} still listened on {after}"
    );
    assert!(
        sockets_on(port, TCP_TIME_WAIT) > 0,
        "no TIME-WAIT socket on port {port} {after}: the test would not test the restart"
    );
}

/// Start, traffic, SIGTERM, restart on the same port, traffic, kill -9, restart on the same
/// port, traffic: each restart meets the TIME-WAIT sockets of the traffic before it.
#[test]
fn the_client_port_is_taken_back_after_sigterm_and_after_kill_9() {
    let mut node = Node::start(common::serve_command(), "first", false);
    let addr = node.http;
    traffic(addr);

    assert!(node.terminate().success(), "SIGTERM exits 0");
    // A graceful exit takes its listeners off the port before the process ends, so a restart
    // right after it (systemctl restart) never meets them.
    assert_released_with_time_wait(addr.port(), "after a graceful exit");
    let mut node = Node::start(
        common::serve_command_on(&addr.to_string()),
        "after-sigterm",
        false,
    );
    assert_eq!(node.http, addr);
    traffic(addr);

    node.kill9();
    // Restarted at once, as a supervisor would: the killed process's listeners linger until the
    // kernel tears its io_uring down (10-50 ms), and the new node waits for them to go instead
    // of refusing the port.
    assert!(
        sockets_on(addr.port(), TCP_TIME_WAIT) > 0,
        "no TIME-WAIT socket on port {} after kill -9: the test would not test the restart",
        addr.port()
    );
    let node = Node::start(
        common::serve_command_on(&addr.to_string()),
        "after-kill-9",
        false,
    );
    assert_eq!(node.http, addr);
    traffic(addr);
}

/// A node with `roles` on cluster address `cluster` (port 0: the OS picks), joining via `seeds`.
fn cluster_command(id: &str, roles: &str, cluster: &str, seeds: &[SocketAddr]) -> Command {
    let cfg = scratch(&format!("{id}.toml"));
    std::fs::write(&cfg, FAST_SWIM).unwrap();
    let mut cmd = common::serve_command();
    cmd.arg("--config").arg(&cfg).args([
        "--node-id",
        id,
        "--roles",
        roles,
        "--cluster-listen",
        cluster,
    ]);
    for s in seeds {
        cmd.args(["--seed", &s.to_string()]);
    }
    cmd
}

/// Publishes through `router` until one is acknowledged with an epoch other than `old` (the
/// only storage node's new life): its epoch.
fn publish_through(router: SocketAddr, old: Option<u64>) -> u64 {
    let mut acked = None;
    common::eventually::eventually(
        "a publish through the router to be acknowledged",
        WAIT_MAX,
        || {
            acked = match publish(router, "via-router") {
                (s, Some(e)) if s == "HTTP/1.1 200 OK" && Some(e) != old => Some(e),
                _ => None,
            };
            acked.is_some()
        },
    );
    acked.unwrap()
}

/// The storage node of a two-node cluster restarted on its cluster port, after SIGTERM and
/// after kill -9, with the router's link traffic in between: the port's TCP listener and UDP
/// socket bind at the first attempt and the router's publishes reach the new node.
#[test]
fn the_cluster_port_is_taken_back_after_sigterm_and_after_kill_9() {
    let start_storage = |cluster: &str, seeds: &[SocketAddr], name: &str| {
        Node::start(cluster_command("s1", "storage", cluster, seeds), name, true)
    };
    let mut storage = start_storage("127.0.0.1:0", &[], "s1-first");
    let port = storage.cluster.unwrap();
    let router = Node::start(
        cluster_command("r1", "router", "127.0.0.1:0", &[port]),
        "r1",
        true,
    );
    let seeds = [router.cluster.unwrap()];
    let epoch = publish_through(router.http, None);

    assert!(storage.terminate().success(), "SIGTERM exits 0");
    assert_eq!(
        sockets_on(port.port(), TCP_LISTEN),
        0,
        "the cluster port still listened on after a graceful exit"
    );
    let mut storage = start_storage(&port.to_string(), &seeds, "s1-after-sigterm");
    assert_eq!(storage.cluster, Some(port));
    let epoch = publish_through(router.http, Some(epoch));

    storage.kill9();
    // Restarted at once (see the client port's test); the router's link may still be closing
    // (its socket on the port in any state but LISTEN).
    let storage = start_storage(&port.to_string(), &seeds, "s1-after-kill-9");
    assert_eq!(storage.cluster, Some(port));
    publish_through(router.http, Some(epoch));
}
