//! Typed protocol messages and their flatbuffers encoding.
//!
//! Three message families share one schema (`proto/schema/fanfare.fbs`):
//! [`ClientMsg`] (client to server), [`ServerMsg`] (server to client) and [`LinkMsg`] (between
//! router and storage shards or nodes). Decoding runs the flatbuffers verifier with
//! [`DecodeLimits`] sized for our messages, then copies the fields into owned values and checks
//! them: names against [`crate::names`], payloads and strings against their limits, union
//! members against the ones this build knows. A decoded value is valid by construction.
//!
//! Payloads stay zero-copy: decoding from a [`Bytes`] hands out slices of it.

mod client;
mod common;
mod direct;
mod fast;
mod link;
mod presence;
mod server;

pub use client::ClientMsg;
pub use common::{
    DecodeError, DecodeLimits, Durability, ErrorCode, Start, BATCH_ITEMS_MAX_DEFAULT,
    IDEMPOTENCY_KEY_BYTES_MAX, NODE_ID_BYTES_MAX, PAYLOAD_BYTES_MAX_DEFAULT, TEXT_BYTES_MAX,
    TOKEN_BYTES_MAX,
};
pub use direct::{item_len, publish_ack_len, write_item, write_publish_ack};
pub use link::{LinkItem, LinkMsg};
pub use presence::{
    MemberMsg, PresenceAction, PresenceEventMsg, PresenceOpts, PresenceStateMsg,
    CLIENT_ID_BYTES_MAX, PRESENCE_INFO_BYTES_MAX, PRESENCE_PAGE_MAX,
};
pub use server::{encode_item, encode_item_batch, ItemMsg, ItemRef, ServerMsg};
