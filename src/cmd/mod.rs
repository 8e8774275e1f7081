//! The `fanfare` subcommands beside `serve`, `pub` and `sub`, one file each. They use the
//! library (`fanfare::..`), never the binary's root, so the command-line definitions stay in
//! main.rs and nothing here points back at it.

pub mod bench;
pub mod check;
pub mod docs;
pub mod token;
