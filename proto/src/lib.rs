//! Fanfare's wire protocol, with no I/O.
//!
//! Everything a peer can send Fanfare is parsed here, by code that never touches a socket or a
//! clock, so it can be property-tested and fuzzed on its own (the quinn and rustls habit):
//!
//! - [`message`]: the typed client, server and link messages and their flatbuffers encoding
//!   (schema in `proto/schema/fanfare.fbs`). Every decode runs the flatbuffers verifier with
//!   limits sized for our messages, then converts to owned Rust values with names and sizes
//!   checked ("parse, don't validate").
//! - [`ws`]: RFC 6455 WebSocket upgrade parsing, frame decoding and frame encoding. A server
//!   frame is encoded once and the same bytes can be queued on any number of connections.
//! - [`framing`]: the length-prefixed framing used on HTTP streams and node links.
//! - [`sse`]: Server-Sent Events encoding and `Last-Event-ID` parsing.
//! - [`http`]: HTTP/1.1 request heads, the HTTP API's route table, query strings and stream
//!   positions.
//! - [`names`]: the namespace and topic name rules.
//!
//! "Need more bytes" is never an error: incremental decoders return `Ok(None)`.
#![warn(missing_docs)]
#![deny(unsafe_code)]
// Non-test code handles failures instead of panicking (issue 30); an invariant that cannot
// fail is allowed on its smallest scope, with the reason next to it.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod framing;
pub mod http;
pub mod message;
pub mod names;
pub mod sse;
pub mod ws;

/// The code flatc generated from `proto/schema/fanfare.fbs` (regenerate with `proto/regen.sh`).
#[allow(
    missing_docs,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    // flatc's accessors unwrap what the verifier or a default guarantees.
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod generated {
    include!("generated/fanfare_generated.rs");
}

pub use message::{
    ClientMsg, DecodeError, DecodeLimits, Durability, ErrorCode, ItemMsg, ItemRef, LinkItem,
    LinkMsg, MemberMsg, PresenceAction, PresenceEventMsg, PresenceOpts, PresenceStateMsg,
    ServerMsg, Start,
};
pub use names::{validate_name, Name, NameError, NAME_BYTES_MAX};

/// The protocol version this build speaks (see docs/protocol.md, "Versioning").
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this build still accepts.
pub const PROTOCOL_VERSION_MIN: u16 = 1;

/// Picks the version both sides speak: the highest in both ranges, or `None`.
pub fn negotiate_version(client_min: u16, client_max: u16) -> Option<u16> {
    let hi = client_max.min(PROTOCOL_VERSION);
    let lo = client_min.max(PROTOCOL_VERSION_MIN);
    (lo <= hi).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation_picks_highest_common() {
        assert_eq!(negotiate_version(1, 1), Some(1));
        assert_eq!(negotiate_version(1, 9), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate_version(2, 9), None);
        assert_eq!(negotiate_version(0, 0), None);
        assert_eq!(negotiate_version(3, 1), None);
    }
}
