//! Shared by the tests that run the `fanfare` binary.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command};

/// `fanfare serve` unpinned with 2 shards on an OS-chosen 127.0.0.1 port (more arguments may
/// follow); the first line it prints names the address.
#[allow(dead_code)] // not every test binary that shares this module starts the default node
pub fn serve_command() -> Command {
    serve_command_on("127.0.0.1:0")
}

/// [`serve_command`] listening on `listen` (a restart on the address a node had).
pub fn serve_command_on(listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanfare"));
    cmd.args(["serve", "--no-pin", "--shards", "2", "--listen", listen]);
    cmd
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
