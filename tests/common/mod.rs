//! Shared by the tests that run the `fanfare` binary.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub mod eventually;

/// `fanfare serve` unpinned with 2 shards on an OS-chosen 127.0.0.1 port (more arguments may
/// follow); the first line it prints names the address.
#[allow(dead_code)] // not every test binary that shares this module starts the default node
pub fn serve_command() -> Command {
    serve_command_on("127.0.0.1:0")
}

/// [`serve_command`] listening on `listen` (a restart on the address a node had).
#[allow(dead_code)]
pub fn serve_command_on(listen: &str) -> Command {
    serve_command_with(2, listen)
}

/// `fanfare serve` unpinned with `shards` shards, listening on `listen`.
pub fn serve_command_with(shards: usize, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanfare"));
    cmd.args(["serve", "--no-pin", "--shards", &shards.to_string()])
        .args(["--listen", listen]);
    cmd
}

/// Sends `signal` (`"-TERM"`, `"-INT"`) to `child` and waits, at most `deadline`, for it to
/// exit (it drains first): its exit status.
#[allow(dead_code)]
pub fn signal_and_wait(child: &mut Child, signal: &str, deadline: Duration) -> ExitStatus {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {signal} sent");
    eventually::eventually(&format!("an exit after kill {signal}"), deadline, || {
        child.try_wait().expect("wait for the child")
    })
}

/// One HTTP/1.1 request (`head`: method and path) with `body` and `Connection: close`, read
/// to the end: the status line and the body. The server answers and closes first, so the
/// TIME-WAIT socket is on its side.
#[allow(dead_code)]
pub fn http_request(addr: SocketAddr, head: &str, body: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(
        s,
        "{head} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("an answer");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The address in the first line `fanfare serve` prints ("fanfare listening on ADDR (...)");
/// `context` goes into the failure message.
#[allow(dead_code)] // not every test binary that shares this module reads an address
pub fn listening_addr(child: &mut Child, context: &str) -> SocketAddr {
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace()
        .nth(3)
        .unwrap_or_else(|| panic!("an address in {line:?} {context}"))
        .parse()
        .expect("an address")
}

/// A `fanfare serve` process, stopped with SIGTERM (and waited for) when dropped.
#[allow(dead_code)] // not every test binary that shares this module starts one
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
}

#[allow(dead_code)]
impl Node {
    /// Starts `cmd` (a `fanfare serve` command): its address comes from its first line on
    /// stdout; its stderr goes nowhere.
    pub fn start(cmd: Command) -> Node {
        Node::spawn(cmd, Stdio::null())
    }

    /// [`Node::start`], keeping its stderr for [`Node::terminate`] (for a node that logs
    /// little: nothing reads it until then).
    pub fn start_keeping_stderr(cmd: Command) -> Node {
        Node::spawn(cmd, Stdio::piped())
    }

    fn spawn(mut cmd: Command, stderr: Stdio) -> Node {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("fanfare runs");
        let addr = listening_addr(&mut child, "");
        Node { child, addr }
    }

    /// SIGTERM, then its exit status and what it wrote on stderr (empty unless kept).
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let status = signal_and_wait(&mut self.child, "-TERM", NODE_STOP_WAIT);
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

/// How long a [`Node`] gets to stop after SIGTERM.
const NODE_STOP_WAIT: Duration = Duration::from_secs(15);

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal_and_wait(&mut self.child, "-TERM", NODE_STOP_WAIT);
        }
    }
}
