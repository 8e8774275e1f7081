//! Shared by the tests that run the `fanfare` binary.

use std::process::Command;

/// `fanfare serve` unpinned with 2 shards on an OS-chosen 127.0.0.1 port (more arguments may
/// follow); the first line it prints names the address.
pub fn serve_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanfare"));
    cmd.args([
        "serve",
        "--no-pin",
        "--shards",
        "2",
        "--listen",
        "127.0.0.1:0",
    ]);
    cmd
}
