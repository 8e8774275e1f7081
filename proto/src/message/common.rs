//! What the three message families share: decode limits, errors, error codes, the start
//! position, and the checked conversions every decoder uses.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};
use thiserror::Error;

use crate::generated::fanfare::wire as fb;
use crate::names::{Name, NameError, NAME_BYTES_MAX};

/// Default largest payload of one message, in bytes (1 MiB).
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Largest token carried in `Hello` or `RefreshToken`, in bytes.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Largest error or reason text, in bytes.
pub const TEXT_BYTES_MAX: usize = 1024;
/// Largest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Largest node id on a link, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 128;
/// Default largest number of items in one batch.
pub const BATCH_ITEMS_MAX_DEFAULT: usize = 1024;
/// Flatbuffers nesting depth our messages need (message, body, union member, vector, item).
pub(super) const VERIFY_DEPTH_MAX: usize = 8;
/// Largest vtable any of our tables has, in bytes, with room for appended fields.
pub(super) const VTABLE_BYTES_MAX: usize = 32;
/// Tables in a non-batch message: message, body, resume position, with room to spare.
pub(super) const VERIFY_TABLES_NONBATCH: usize = 8;

/// Limits applied while decoding. Every field has a default suited to a public server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest payload accepted, in bytes.
    pub payload_bytes_max: usize,
    /// Largest namespace or topic name, in bytes (at most [`NAME_BYTES_MAX`]).
    pub name_bytes_max: usize,
    /// Largest number of items in one batch.
    pub batch_items_max: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            name_bytes_max: NAME_BYTES_MAX,
            batch_items_max: BATCH_ITEMS_MAX_DEFAULT,
        }
    }
}

impl DecodeLimits {
    pub(super) fn verifier(&self, buf_len: usize, tables_max: usize) -> VerifierOptions {
        VerifierOptions {
            max_depth: VERIFY_DEPTH_MAX,
            max_tables: tables_max,
            // A well-formed buffer makes the verifier look at each byte once, except shared
            // vtables, which it counts again for every table using them (our vtables are at
            // most 4 + 2 * 6 fields = 16 bytes). Anything more is overlapping offsets, an
            // amplification attack.
            max_apparent_size: buf_len.saturating_add(tables_max.saturating_mul(VTABLE_BYTES_MAX)),
            ignore_missing_null_terminator: false,
        }
    }
}

/// Why bytes did not decode into a message.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The flatbuffers verifier refused the buffer; the text says why in the protocol's
    /// words (never the verifier's internals: offsets and type names mean nothing to a client).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The union member is not one this build knows.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The resume position is of a kind this build does not know.
    #[error("unknown resume position type {0}")]
    UnknownFrom(u8),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field holds a value the protocol does not allow.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
    /// A namespace or topic name breaks the rules.
    #[error("invalid {field}: {source}")]
    InvalidName {
        /// `namespace` or `topic`.
        field: &'static str,
        /// What is wrong with it.
        source: NameError,
    },
    /// A payload, string or batch is over its limit.
    #[error("{field} is {len}, over the limit of {max}")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// Its size (bytes, or items for batches).
        len: usize,
        /// The limit in force.
        max: usize,
    },
}

impl DecodeError {
    /// The error code a server answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::InvalidName { .. } => ErrorCode::InvalidName,
            DecodeError::TooLarge {
                field: "payload", ..
            } => ErrorCode::MessageTooLarge,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl From<flatbuffers::InvalidFlatbuffer> for DecodeError {
    fn from(e: flatbuffers::InvalidFlatbuffer) -> Self {
        use flatbuffers::InvalidFlatbuffer as F;
        DecodeError::Malformed(match e {
            F::MissingRequiredField { .. } => "a required field is missing",
            F::InconsistentUnion { .. } => "a union's type and value disagree",
            F::Utf8Error { .. } => "a string is not UTF-8",
            F::MissingNullTerminator { .. } => "a string is not terminated",
            F::TooManyTables | F::ApparentSizeTooLarge | F::DepthLimitReached => {
                "the message is larger or deeper than any Fanfare message"
            }
            _ => "not a Fanfare message of this kind (or cut short)",
        })
    }
}

/// Machine-readable error codes (numbers are stable; see docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A code this build does not know.
    Unknown = 0,
    /// Malformed or invalid message.
    BadRequest = 1,
    /// A namespace or topic name breaks the rules.
    InvalidName = 2,
    /// A payload over the message size limit.
    MessageTooLarge = 3,
    /// Over the subscriptions-per-connection limit.
    TooManySubscriptions = 4,
    /// No such subscription on this connection.
    UnknownSubscription = 5,
    /// This connection already subscribes to the topic.
    AlreadySubscribed = 6,
    /// The owner has too many topics.
    TopicLimit = 7,
    /// Backpressure: try again later.
    Overloaded = 8,
    /// No valid token.
    Unauthorized = 9,
    /// The token does not grant this.
    Forbidden = 10,
    /// The token expired.
    TokenExpired = 11,
    /// No protocol version in common.
    UnsupportedVersion = 12,
    /// The server is shutting down.
    ShuttingDown = 13,
    /// A resume position ahead of the topic's head.
    InvalidResume = 14,
    /// Over a rate limit.
    RateLimited = 15,
    /// The topic's owner is unreachable (a cluster failover is under way): retry.
    Unavailable = 16,
    /// The topic's owner could not store the message (disk full, an I/O error): it was not
    /// published. Other topics go on working.
    StorageUnavailable = 17,
}

impl ErrorCode {
    /// Maps a wire number to a code; numbers this build does not know become `Unknown`.
    pub fn from_u16(n: u16) -> Self {
        use ErrorCode::*;
        const ALL: [ErrorCode; 18] = [
            Unknown,
            BadRequest,
            InvalidName,
            MessageTooLarge,
            TooManySubscriptions,
            UnknownSubscription,
            AlreadySubscribed,
            TopicLimit,
            Overloaded,
            Unauthorized,
            Forbidden,
            TokenExpired,
            UnsupportedVersion,
            ShuttingDown,
            InvalidResume,
            RateLimited,
            Unavailable,
            StorageUnavailable,
        ];
        ALL.get(usize::from(n)).copied().unwrap_or(Unknown)
    }

    pub(super) fn wire(self) -> fb::ErrorCode {
        fb::ErrorCode(self as u16)
    }
}

/// How far a publish was kept when it was acknowledged (the schema's `Durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Durability {
    /// In the owner's memory only (the broker has no data dir).
    #[default]
    Memory = 0,
    /// Written to the owner's log, not synced (`fsync = "never"`): a crash of the process
    /// keeps it, a power loss may not.
    Written = 1,
    /// Written and synced (fdatasync) before the acknowledgement.
    Synced = 2,
}

impl Durability {
    /// Maps a wire number; numbers this build does not know read as `Memory` (the weakest
    /// promise).
    pub fn from_u8(n: u8) -> Self {
        match n {
            1 => Durability::Written,
            2 => Durability::Synced,
            _ => Durability::Memory,
        }
    }

    /// Its name in JSON answers and logs: `memory`, `written` or `synced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Written => "written",
            Durability::Synced => "synced",
        }
    }

    pub(super) fn wire(self) -> fb::Durability {
        fb::Durability(self as u8)
    }
}

/// Where a subscription starts (the schema's `From` union).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Start {
    /// Only messages published from now on.
    #[default]
    Latest,
    /// Resume at `seq` (the next sequence wanted) within `epoch`.
    At {
        /// The epoch the subscriber last saw.
        epoch: u64,
        /// The next sequence it wants.
        seq: u64,
    },
    /// The last `n` messages still in history, then live.
    LastN(u32),
}

// ------------------------------------------------------------------ decoding helpers

pub(super) fn checked_name(
    s: Option<&str>,
    field: &'static str,
    lim: &DecodeLimits,
) -> Result<Name, DecodeError> {
    let s = s.ok_or(DecodeError::Missing(field))?;
    Name::parse(s, lim.name_bytes_max).map_err(|source| DecodeError::InvalidName { field, source })
}

pub(super) fn checked_str(
    s: Option<&str>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, DecodeError> {
    match s {
        Some(s) if s.len() > max => Err(DecodeError::TooLarge {
            field,
            len: s.len(),
            max,
        }),
        Some(s) => Ok(Some(s.to_owned())),
        None => Ok(None),
    }
}

pub(super) fn checked_payload(
    v: Option<flatbuffers::Vector<'_, u8>>,
    src: &Bytes,
    lim: &DecodeLimits,
) -> Result<Bytes, DecodeError> {
    let Some(v) = v else {
        return Ok(Bytes::new());
    };
    let bytes = v.bytes();
    if bytes.len() > lim.payload_bytes_max {
        return Err(DecodeError::TooLarge {
            field: "payload",
            len: bytes.len(),
            max: lim.payload_bytes_max,
        });
    }
    if bytes.is_empty() {
        return Ok(Bytes::new());
    }
    // The verifier proved the vector lies inside `src`, so this slices without copying.
    Ok(src.slice_ref(bytes))
}

pub(super) fn decode_from(
    ty: fb::From,
    latest: Option<fb::FromLatest<'_>>,
    pos: Option<fb::FromPosition<'_>>,
    last: Option<fb::FromLastN<'_>>,
) -> Result<Start, DecodeError> {
    match ty {
        fb::From::NONE => Ok(Start::Latest),
        fb::From::FromLatest if latest.is_some() => Ok(Start::Latest),
        fb::From::FromPosition => pos
            .map(|p| Start::At {
                epoch: p.epoch(),
                seq: p.seq(),
            })
            .ok_or(DecodeError::Missing("from")),
        fb::From::FromLastN => last
            .map(|l| Start::LastN(l.count()))
            .ok_or(DecodeError::Missing("from")),
        fb::From::FromLatest => Err(DecodeError::Missing("from")),
        other => Err(DecodeError::UnknownFrom(other.0)),
    }
}

pub(super) fn encode_from<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    from: Start,
) -> (fb::From, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match from {
        Start::Latest => (
            fb::From::FromLatest,
            fb::FromLatest::create(fbb, &fb::FromLatestArgs {}).as_union_value(),
        ),
        Start::At { epoch, seq } => (
            fb::From::FromPosition,
            fb::FromPosition::create(fbb, &fb::FromPositionArgs { epoch, seq }).as_union_value(),
        ),
        Start::LastN(count) => (
            fb::From::FromLastN,
            fb::FromLastN::create(fbb, &fb::FromLastNArgs { count }).as_union_value(),
        ),
    }
}

pub(super) fn opt_str<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    s: Option<&str>,
) -> Option<WIPOffset<&'a str>> {
    s.map(|s| fbb.create_string(s))
}

pub(super) fn opt_bytes<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    b: &[u8],
) -> Option<WIPOffset<flatbuffers::Vector<'a, u8>>> {
    (!b.is_empty()).then(|| fbb.create_vector(b))
}
