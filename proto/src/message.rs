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

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};
use thiserror::Error;

use crate::generated::fanfare::wire as fb;
use crate::names::{validate_name, NameError, NAME_BYTES_MAX};

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
const VERIFY_DEPTH_MAX: usize = 8;
/// Largest vtable any of our tables has, in bytes, with room for appended fields.
const VTABLE_BYTES_MAX: usize = 32;
/// Tables in a non-batch message: message, body, resume position, with room to spare.
const VERIFY_TABLES_NONBATCH: usize = 8;

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
    fn verifier(&self, buf_len: usize, tables_max: usize) -> VerifierOptions {
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
    /// The flatbuffers verifier refused the buffer.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The union member is not one this build knows.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The resume position is of a kind this build does not know.
    #[error("unknown resume position type {0}")]
    UnknownFrom(u8),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
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
        DecodeError::Malformed(e.to_string())
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
}

impl ErrorCode {
    /// Maps a wire number to a code; numbers this build does not know become `Unknown`.
    pub fn from_u16(n: u16) -> Self {
        use ErrorCode::*;
        const ALL: [ErrorCode; 17] = [
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
        ];
        ALL.get(usize::from(n)).copied().unwrap_or(Unknown)
    }

    fn wire(self) -> fb::ErrorCode {
        fb::ErrorCode(self as u16)
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

/// A message from a client.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientMsg {
    /// Protocol version range and optional token; first on a connection.
    Hello {
        /// Oldest version the client speaks.
        version_min: u16,
        /// Newest version the client speaks.
        version_max: u16,
        /// Access token, if any.
        token: Option<String>,
    },
    /// Publish a payload to a topic.
    Publish {
        /// Echoed in the ack or error.
        request_id: u64,
        /// The topic's namespace.
        namespace: String,
        /// The topic.
        topic: String,
        /// The message body.
        payload: Bytes,
        /// Optional key for de-duplication of retried publishes.
        idempotency_key: Option<String>,
    },
    /// Subscribe to a topic.
    Subscribe {
        /// Echoed in `Subscribed` or the error.
        request_id: u64,
        /// The topic's namespace.
        namespace: String,
        /// The topic.
        topic: String,
        /// Where to start.
        from: Start,
    },
    /// End a subscription.
    Unsubscribe {
        /// Echoed in `Unsubscribed` or the error.
        request_id: u64,
        /// The subscription to end.
        subscription_id: u64,
    },
    /// Liveness probe; answered by `Pong` with the same nonce.
    Ping {
        /// Echoed.
        nonce: u64,
    },
    /// Replace the connection's token.
    RefreshToken {
        /// Echoed in the error, if any.
        request_id: u64,
        /// The new token.
        token: String,
    },
}

/// One delivered message, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMsg {
    /// The subscription it belongs to.
    pub subscription_id: u64,
    /// The topic's epoch.
    pub epoch: u64,
    /// Its sequence within the epoch.
    pub seq: u64,
    /// The body.
    pub payload: Bytes,
    /// Who published it, when the broker knows.
    pub publisher_id: Option<String>,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerMsg {
    /// Answer to `Hello`.
    Welcome {
        /// The negotiated version.
        version: u16,
        /// How often idle subscriptions get a heartbeat.
        heartbeat_interval_ms: u32,
        /// The largest payload the server accepts.
        max_message_bytes: u32,
    },
    /// A publish was ordered.
    PublishAck {
        /// From the publish.
        request_id: u64,
        /// The topic's epoch.
        epoch: u64,
        /// The message's sequence.
        seq: u64,
    },
    /// A subscription is live.
    Subscribed {
        /// From the subscribe.
        request_id: u64,
        /// Names the subscription on this connection.
        subscription_id: u64,
        /// The topic's epoch.
        epoch: u64,
        /// The first sequence the subscription will deliver.
        next_seq: u64,
    },
    /// A subscription ended at the client's request.
    Unsubscribed {
        /// From the unsubscribe.
        request_id: u64,
        /// The subscription that ended.
        subscription_id: u64,
    },
    /// One message.
    Item(ItemMsg),
    /// Several messages.
    ItemBatch(Vec<ItemMsg>),
    /// Messages were missed and will never arrive.
    Discontinuity {
        /// The subscription.
        subscription_id: u64,
        /// The last sequence delivered (or resumed from) in the old epoch.
        last_seq: u64,
        /// The next sequence that will be delivered.
        new_seq: u64,
        /// The epoch `new_seq` belongs to.
        new_epoch: u64,
    },
    /// The subscription is alive but quiet.
    Heartbeat {
        /// The subscription.
        subscription_id: u64,
        /// The topic's epoch.
        epoch: u64,
        /// The next sequence it will deliver.
        next_seq: u64,
    },
    /// A request failed.
    Error {
        /// The failed request (0 when none).
        request_id: u64,
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        text: String,
    },
    /// Answer to `Ping`.
    Pong {
        /// From the ping.
        nonce: u64,
    },
    /// The server ended a subscription.
    SubscriptionClosed {
        /// The subscription.
        subscription_id: u64,
        /// Why.
        code: ErrorCode,
        /// Human-readable detail.
        text: String,
    },
    /// Answer to `RefreshToken`: the new token is in force.
    TokenRefreshed {
        /// From the request.
        request_id: u64,
        /// When the new token expires (Unix seconds; 0 when authentication is off).
        expires_at: u64,
    },
}

/// One message of a topic on a node link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkItem {
    /// Its sequence.
    pub seq: u64,
    /// The body.
    pub payload: Bytes,
    /// Who published it.
    pub publisher_id: Option<String>,
}

/// A message on a link between a router and a storage node.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LinkMsg {
    /// First message each way.
    Hello {
        /// Protocol version.
        version: u16,
        /// The sender's node id.
        node_id: String,
        /// The sender's shard.
        shard: u16,
    },
    /// Publish on the owner.
    Publish {
        /// Echoed in the ack.
        request_id: u64,
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// Body.
        payload: Bytes,
        /// Publisher.
        publisher_id: Option<String>,
        /// De-duplication key.
        idempotency_key: Option<String>,
    },
    /// The owner ordered a publish.
    PublishAck {
        /// From the publish.
        request_id: u64,
        /// Epoch.
        epoch: u64,
        /// Sequence.
        seq: u64,
    },
    /// Add (or drop) a router shard's interest in a topic.
    Interest {
        /// Echoed in the answer.
        request_id: u64,
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// `true` to add interest, `false` to drop it.
        subscribe: bool,
        /// Where to start.
        from: Start,
    },
    /// Answer to `Interest`.
    Subscribed {
        /// From the interest.
        request_id: u64,
        /// Epoch.
        epoch: u64,
        /// First sequence that follows.
        next_seq: u64,
    },
    /// Messages of one topic.
    ItemBatch {
        /// 0 for live items, else the interest they answer.
        request_id: u64,
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// Their epoch.
        epoch: u64,
        /// In sequence order.
        items: Vec<LinkItem>,
    },
    /// Messages of a topic are lost to the receiver.
    Discontinuity {
        /// The interest it answers, or 0.
        request_id: u64,
        /// Namespace.
        namespace: String,
        /// Topic.
        topic: String,
        /// Last sequence before the gap.
        last_seq: u64,
        /// Next sequence after it.
        new_seq: u64,
        /// Its epoch.
        new_epoch: u64,
    },
    /// A request failed.
    Error {
        /// The request.
        request_id: u64,
        /// What went wrong.
        code: ErrorCode,
        /// Detail.
        text: String,
    },
}

// ------------------------------------------------------------------ decoding helpers

fn checked_name(
    s: Option<&str>,
    field: &'static str,
    lim: &DecodeLimits,
) -> Result<String, DecodeError> {
    let s = s.ok_or(DecodeError::Missing(field))?;
    validate_name(s, lim.name_bytes_max)
        .map_err(|source| DecodeError::InvalidName { field, source })?;
    Ok(s.to_owned())
}

fn checked_str(
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

fn checked_payload(
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

fn decode_from(
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

fn encode_from<'a>(
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

fn opt_str<'a>(fbb: &mut FlatBufferBuilder<'a>, s: Option<&str>) -> Option<WIPOffset<&'a str>> {
    s.map(|s| fbb.create_string(s))
}

fn opt_bytes<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    b: &[u8],
) -> Option<WIPOffset<flatbuffers::Vector<'a, u8>>> {
    (!b.is_empty()).then(|| fbb.create_vector(b))
}

// ------------------------------------------------------------------ ClientMsg

impl ClientMsg {
    /// Decodes and checks a client message. `buf` must hold exactly one message.
    pub fn decode(buf: &Bytes, lim: &DecodeLimits) -> Result<Self, DecodeError> {
        let opts = lim.verifier(buf.len(), VERIFY_TABLES_NONBATCH);
        let m = flatbuffers::root_with_opts::<fb::ClientMessage>(&opts, buf)?;
        let msg = match m.body_type() {
            fb::ClientBody::Hello => {
                let h = m.body_as_hello().ok_or(DecodeError::Missing("body"))?;
                ClientMsg::Hello {
                    version_min: h.version_min(),
                    version_max: h.version_max(),
                    token: checked_str(h.token(), "token", TOKEN_BYTES_MAX)?,
                }
            }
            fb::ClientBody::Publish => {
                let p = m.body_as_publish().ok_or(DecodeError::Missing("body"))?;
                ClientMsg::Publish {
                    request_id: p.request_id(),
                    namespace: checked_name(Some(p.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(p.topic()), "topic", lim)?,
                    payload: checked_payload(p.payload(), buf, lim)?,
                    idempotency_key: checked_str(
                        p.idempotency_key(),
                        "idempotency_key",
                        IDEMPOTENCY_KEY_BYTES_MAX,
                    )?,
                }
            }
            fb::ClientBody::Subscribe => {
                let s = m.body_as_subscribe().ok_or(DecodeError::Missing("body"))?;
                ClientMsg::Subscribe {
                    request_id: s.request_id(),
                    namespace: checked_name(Some(s.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(s.topic()), "topic", lim)?,
                    from: decode_from(
                        s.from_type(),
                        s.from_as_from_latest(),
                        s.from_as_from_position(),
                        s.from_as_from_last_n(),
                    )?,
                }
            }
            fb::ClientBody::Unsubscribe => {
                let u = m
                    .body_as_unsubscribe()
                    .ok_or(DecodeError::Missing("body"))?;
                ClientMsg::Unsubscribe {
                    request_id: u.request_id(),
                    subscription_id: u.subscription_id(),
                }
            }
            fb::ClientBody::Ping => {
                let p = m.body_as_ping().ok_or(DecodeError::Missing("body"))?;
                ClientMsg::Ping { nonce: p.nonce() }
            }
            fb::ClientBody::RefreshToken => {
                let r = m
                    .body_as_refresh_token()
                    .ok_or(DecodeError::Missing("body"))?;
                ClientMsg::RefreshToken {
                    request_id: r.request_id(),
                    token: checked_str(Some(r.token()), "token", TOKEN_BYTES_MAX)?
                        .unwrap_or_default(),
                }
            }
            other => return Err(DecodeError::UnknownType(other.0)),
        };
        Ok(msg)
    }

    /// Encodes into `fbb` (which is reset first); the bytes are `fbb.finished_data()`.
    pub fn encode_into(&self, fbb: &mut FlatBufferBuilder<'_>) {
        fbb.reset();
        let (ty, body) = match self {
            ClientMsg::Hello {
                version_min,
                version_max,
                token,
            } => {
                let token = opt_str(fbb, token.as_deref());
                let b = fb::Hello::create(
                    fbb,
                    &fb::HelloArgs {
                        version_min: *version_min,
                        version_max: *version_max,
                        token,
                    },
                );
                (fb::ClientBody::Hello, b.as_union_value())
            }
            ClientMsg::Publish {
                request_id,
                namespace,
                topic,
                payload,
                idempotency_key,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let payload = opt_bytes(fbb, payload);
                let idempotency_key = opt_str(fbb, idempotency_key.as_deref());
                let b = fb::Publish::create(
                    fbb,
                    &fb::PublishArgs {
                        request_id: *request_id,
                        namespace,
                        topic,
                        payload,
                        idempotency_key,
                    },
                );
                (fb::ClientBody::Publish, b.as_union_value())
            }
            ClientMsg::Subscribe {
                request_id,
                namespace,
                topic,
                from,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let (from_type, from) = encode_from(fbb, *from);
                let b = fb::Subscribe::create(
                    fbb,
                    &fb::SubscribeArgs {
                        request_id: *request_id,
                        namespace,
                        topic,
                        from_type,
                        from: Some(from),
                    },
                );
                (fb::ClientBody::Subscribe, b.as_union_value())
            }
            ClientMsg::Unsubscribe {
                request_id,
                subscription_id,
            } => {
                let b = fb::Unsubscribe::create(
                    fbb,
                    &fb::UnsubscribeArgs {
                        request_id: *request_id,
                        subscription_id: *subscription_id,
                    },
                );
                (fb::ClientBody::Unsubscribe, b.as_union_value())
            }
            ClientMsg::Ping { nonce } => {
                let b = fb::Ping::create(fbb, &fb::PingArgs { nonce: *nonce });
                (fb::ClientBody::Ping, b.as_union_value())
            }
            ClientMsg::RefreshToken { request_id, token } => {
                let token = Some(fbb.create_string(token));
                let b = fb::RefreshToken::create(
                    fbb,
                    &fb::RefreshTokenArgs {
                        request_id: *request_id,
                        token,
                    },
                );
                (fb::ClientBody::RefreshToken, b.as_union_value())
            }
        };
        let root = fb::ClientMessage::create(
            fbb,
            &fb::ClientMessageArgs {
                body_type: ty,
                body: Some(body),
            },
        );
        fbb.finish_minimal(root);
    }

    /// Encodes into a fresh vector.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        self.encode_into(&mut fbb);
        fbb.finished_data().to_vec()
    }
}

// ------------------------------------------------------------------ ServerMsg

fn decode_item(i: fb::Item<'_>, src: &Bytes, lim: &DecodeLimits) -> Result<ItemMsg, DecodeError> {
    Ok(ItemMsg {
        subscription_id: i.subscription_id(),
        epoch: i.epoch(),
        seq: i.seq(),
        payload: checked_payload(i.payload(), src, lim)?,
        publisher_id: checked_str(i.publisher_id(), "publisher_id", TEXT_BYTES_MAX)?,
    })
}

fn create_item<'a>(fbb: &mut FlatBufferBuilder<'a>, it: ItemRef<'_>) -> WIPOffset<fb::Item<'a>> {
    let payload = opt_bytes(fbb, it.payload);
    let publisher_id = opt_str(fbb, it.publisher_id);
    fb::Item::create(
        fbb,
        &fb::ItemArgs {
            subscription_id: it.subscription_id,
            epoch: it.epoch,
            seq: it.seq,
            payload,
            publisher_id,
        },
    )
}

/// A borrowed item, for encoding on the fan-out path without building an [`ItemMsg`].
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'a> {
    /// The subscription id every receiver of this encoding shares.
    pub subscription_id: u64,
    /// Epoch.
    pub epoch: u64,
    /// Sequence.
    pub seq: u64,
    /// Body.
    pub payload: &'a [u8],
    /// Publisher, if known.
    pub publisher_id: Option<&'a str>,
}

impl<'a> From<&'a ItemMsg> for ItemRef<'a> {
    fn from(i: &'a ItemMsg) -> Self {
        ItemRef {
            subscription_id: i.subscription_id,
            epoch: i.epoch,
            seq: i.seq,
            payload: &i.payload,
            publisher_id: i.publisher_id.as_deref(),
        }
    }
}

/// Encodes one `Item` server message into `fbb` (reset first): the fan-out hot path.
pub fn encode_item(fbb: &mut FlatBufferBuilder<'_>, it: ItemRef<'_>) {
    fbb.reset();
    let item = create_item(fbb, it);
    let root = fb::ServerMessage::create(
        fbb,
        &fb::ServerMessageArgs {
            body_type: fb::ServerBody::Item,
            body: Some(item.as_union_value()),
        },
    );
    fbb.finish_minimal(root);
}

/// Encodes an `ItemBatch` server message from borrowed items into `fbb` (reset first).
pub fn encode_item_batch<'i>(
    fbb: &mut FlatBufferBuilder<'_>,
    items: impl ExactSizeIterator<Item = ItemRef<'i>>,
) {
    fbb.reset();
    let offs: Vec<_> = items.map(|it| create_item(fbb, it)).collect();
    let items = Some(fbb.create_vector(&offs));
    let batch = fb::ItemBatch::create(fbb, &fb::ItemBatchArgs { items });
    let root = fb::ServerMessage::create(
        fbb,
        &fb::ServerMessageArgs {
            body_type: fb::ServerBody::ItemBatch,
            body: Some(batch.as_union_value()),
        },
    );
    fbb.finish_minimal(root);
}

impl ServerMsg {
    /// Decodes and checks a server message (used by clients, the CLI and the load generator).
    pub fn decode(buf: &Bytes, lim: &DecodeLimits) -> Result<Self, DecodeError> {
        let opts = lim.verifier(
            buf.len(),
            lim.batch_items_max.saturating_add(VERIFY_TABLES_NONBATCH),
        );
        let m = flatbuffers::root_with_opts::<fb::ServerMessage>(&opts, buf)?;
        let missing = DecodeError::Missing("body");
        let msg = match m.body_type() {
            fb::ServerBody::Welcome => {
                let w = m.body_as_welcome().ok_or(missing)?;
                ServerMsg::Welcome {
                    version: w.version(),
                    heartbeat_interval_ms: w.heartbeat_interval_ms(),
                    max_message_bytes: w.max_message_bytes(),
                }
            }
            fb::ServerBody::PublishAck => {
                let a = m.body_as_publish_ack().ok_or(missing)?;
                ServerMsg::PublishAck {
                    request_id: a.request_id(),
                    epoch: a.epoch(),
                    seq: a.seq(),
                }
            }
            fb::ServerBody::Subscribed => {
                let s = m.body_as_subscribed().ok_or(missing)?;
                ServerMsg::Subscribed {
                    request_id: s.request_id(),
                    subscription_id: s.subscription_id(),
                    epoch: s.epoch(),
                    next_seq: s.next_seq(),
                }
            }
            fb::ServerBody::Unsubscribed => {
                let u = m.body_as_unsubscribed().ok_or(missing)?;
                ServerMsg::Unsubscribed {
                    request_id: u.request_id(),
                    subscription_id: u.subscription_id(),
                }
            }
            fb::ServerBody::Item => {
                ServerMsg::Item(decode_item(m.body_as_item().ok_or(missing)?, buf, lim)?)
            }
            fb::ServerBody::ItemBatch => {
                let b = m.body_as_item_batch().ok_or(missing)?;
                let items = b.items();
                if items.len() > lim.batch_items_max {
                    return Err(DecodeError::TooLarge {
                        field: "items",
                        len: items.len(),
                        max: lim.batch_items_max,
                    });
                }
                ServerMsg::ItemBatch(
                    items
                        .iter()
                        .map(|i| decode_item(i, buf, lim))
                        .collect::<Result<_, _>>()?,
                )
            }
            fb::ServerBody::Discontinuity => {
                let d = m.body_as_discontinuity().ok_or(missing)?;
                ServerMsg::Discontinuity {
                    subscription_id: d.subscription_id(),
                    last_seq: d.last_seq(),
                    new_seq: d.new_seq(),
                    new_epoch: d.new_epoch(),
                }
            }
            fb::ServerBody::Heartbeat => {
                let h = m.body_as_heartbeat().ok_or(missing)?;
                ServerMsg::Heartbeat {
                    subscription_id: h.subscription_id(),
                    epoch: h.epoch(),
                    next_seq: h.next_seq(),
                }
            }
            fb::ServerBody::Error => {
                let e = m.body_as_error().ok_or(missing)?;
                ServerMsg::Error {
                    request_id: e.request_id(),
                    code: ErrorCode::from_u16(e.code().0),
                    text: checked_str(e.text(), "text", TEXT_BYTES_MAX)?.unwrap_or_default(),
                }
            }
            fb::ServerBody::Pong => ServerMsg::Pong {
                nonce: m.body_as_pong().ok_or(missing)?.nonce(),
            },
            fb::ServerBody::SubscriptionClosed => {
                let c = m.body_as_subscription_closed().ok_or(missing)?;
                ServerMsg::SubscriptionClosed {
                    subscription_id: c.subscription_id(),
                    code: ErrorCode::from_u16(c.code().0),
                    text: checked_str(c.text(), "text", TEXT_BYTES_MAX)?.unwrap_or_default(),
                }
            }
            fb::ServerBody::TokenRefreshed => {
                let t = m.body_as_token_refreshed().ok_or(missing)?;
                ServerMsg::TokenRefreshed {
                    request_id: t.request_id(),
                    expires_at: t.expires_at(),
                }
            }
            other => return Err(DecodeError::UnknownType(other.0)),
        };
        Ok(msg)
    }

    /// Encodes into `fbb` (which is reset first); the bytes are `fbb.finished_data()`.
    pub fn encode_into(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let (ty, body) = match self {
            ServerMsg::Item(i) => return encode_item(fbb, i.into()),
            ServerMsg::ItemBatch(items) => {
                return encode_item_batch(fbb, items.iter().map(ItemRef::from))
            }
            _ => {
                fbb.reset();
                self.create_simple(fbb)
            }
        };
        let root = fb::ServerMessage::create(
            fbb,
            &fb::ServerMessageArgs {
                body_type: ty,
                body: Some(body),
            },
        );
        fbb.finish_minimal(root);
    }

    fn create_simple<'a>(
        &self,
        fbb: &mut FlatBufferBuilder<'a>,
    ) -> (fb::ServerBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
        match self {
            ServerMsg::Welcome {
                version,
                heartbeat_interval_ms,
                max_message_bytes,
            } => (
                fb::ServerBody::Welcome,
                fb::Welcome::create(
                    fbb,
                    &fb::WelcomeArgs {
                        version: *version,
                        heartbeat_interval_ms: *heartbeat_interval_ms,
                        max_message_bytes: *max_message_bytes,
                    },
                )
                .as_union_value(),
            ),
            ServerMsg::PublishAck {
                request_id,
                epoch,
                seq,
            } => (
                fb::ServerBody::PublishAck,
                fb::PublishAck::create(
                    fbb,
                    &fb::PublishAckArgs {
                        request_id: *request_id,
                        epoch: *epoch,
                        seq: *seq,
                    },
                )
                .as_union_value(),
            ),
            ServerMsg::Subscribed {
                request_id,
                subscription_id,
                epoch,
                next_seq,
            } => (
                fb::ServerBody::Subscribed,
                fb::Subscribed::create(
                    fbb,
                    &fb::SubscribedArgs {
                        request_id: *request_id,
                        subscription_id: *subscription_id,
                        epoch: *epoch,
                        next_seq: *next_seq,
                    },
                )
                .as_union_value(),
            ),
            ServerMsg::Unsubscribed {
                request_id,
                subscription_id,
            } => (
                fb::ServerBody::Unsubscribed,
                fb::Unsubscribed::create(
                    fbb,
                    &fb::UnsubscribedArgs {
                        request_id: *request_id,
                        subscription_id: *subscription_id,
                    },
                )
                .as_union_value(),
            ),
            ServerMsg::Discontinuity {
                subscription_id,
                last_seq,
                new_seq,
                new_epoch,
            } => (
                fb::ServerBody::Discontinuity,
                fb::Discontinuity::create(
                    fbb,
                    &fb::DiscontinuityArgs {
                        subscription_id: *subscription_id,
                        last_seq: *last_seq,
                        new_seq: *new_seq,
                        new_epoch: *new_epoch,
                    },
                )
                .as_union_value(),
            ),
            ServerMsg::Heartbeat {
                subscription_id,
                epoch,
                next_seq,
            } => (
                fb::ServerBody::Heartbeat,
                fb::Heartbeat::create(
                    fbb,
                    &fb::HeartbeatArgs {
                        subscription_id: *subscription_id,
                        epoch: *epoch,
                        next_seq: *next_seq,
                    },
                )
                .as_union_value(),
            ),
            ServerMsg::Error {
                request_id,
                code,
                text,
            } => {
                let text = Some(fbb.create_string(text));
                (
                    fb::ServerBody::Error,
                    fb::Error::create(
                        fbb,
                        &fb::ErrorArgs {
                            request_id: *request_id,
                            code: code.wire(),
                            text,
                        },
                    )
                    .as_union_value(),
                )
            }
            ServerMsg::Pong { nonce } => (
                fb::ServerBody::Pong,
                fb::Pong::create(fbb, &fb::PongArgs { nonce: *nonce }).as_union_value(),
            ),
            ServerMsg::SubscriptionClosed {
                subscription_id,
                code,
                text,
            } => {
                let text = Some(fbb.create_string(text));
                (
                    fb::ServerBody::SubscriptionClosed,
                    fb::SubscriptionClosed::create(
                        fbb,
                        &fb::SubscriptionClosedArgs {
                            subscription_id: *subscription_id,
                            code: code.wire(),
                            text,
                        },
                    )
                    .as_union_value(),
                )
            }
            ServerMsg::TokenRefreshed {
                request_id,
                expires_at,
            } => (
                fb::ServerBody::TokenRefreshed,
                fb::TokenRefreshed::create(
                    fbb,
                    &fb::TokenRefreshedArgs {
                        request_id: *request_id,
                        expires_at: *expires_at,
                    },
                )
                .as_union_value(),
            ),
            // Handled by the caller; kept total so a new variant fails to compile here.
            ServerMsg::Item(_) | ServerMsg::ItemBatch(_) => {
                unreachable!("items are encoded by encode_item/encode_item_batch")
            }
        }
    }

    /// Encodes into a fresh vector.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        self.encode_into(&mut fbb);
        fbb.finished_data().to_vec()
    }
}

// ------------------------------------------------------------------ LinkMsg

impl LinkMsg {
    /// Decodes and checks a link message.
    pub fn decode(buf: &Bytes, lim: &DecodeLimits) -> Result<Self, DecodeError> {
        let opts = lim.verifier(
            buf.len(),
            lim.batch_items_max.saturating_add(VERIFY_TABLES_NONBATCH),
        );
        let m = flatbuffers::root_with_opts::<fb::LinkMessage>(&opts, buf)?;
        let missing = DecodeError::Missing("body");
        let msg = match m.body_type() {
            fb::LinkBody::LinkHello => {
                let h = m.body_as_link_hello().ok_or(missing)?;
                LinkMsg::Hello {
                    version: h.version(),
                    node_id: checked_str(Some(h.node_id()), "node_id", NODE_ID_BYTES_MAX)?
                        .unwrap_or_default(),
                    shard: h.shard(),
                }
            }
            fb::LinkBody::LinkPublish => {
                let p = m.body_as_link_publish().ok_or(missing)?;
                LinkMsg::Publish {
                    request_id: p.request_id(),
                    namespace: checked_name(Some(p.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(p.topic()), "topic", lim)?,
                    payload: checked_payload(p.payload(), buf, lim)?,
                    publisher_id: checked_str(p.publisher_id(), "publisher_id", TEXT_BYTES_MAX)?,
                    idempotency_key: checked_str(
                        p.idempotency_key(),
                        "idempotency_key",
                        IDEMPOTENCY_KEY_BYTES_MAX,
                    )?,
                }
            }
            fb::LinkBody::LinkPublishAck => {
                let a = m.body_as_link_publish_ack().ok_or(missing)?;
                LinkMsg::PublishAck {
                    request_id: a.request_id(),
                    epoch: a.epoch(),
                    seq: a.seq(),
                }
            }
            fb::LinkBody::LinkInterest => {
                let i = m.body_as_link_interest().ok_or(missing)?;
                LinkMsg::Interest {
                    request_id: i.request_id(),
                    namespace: checked_name(Some(i.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(i.topic()), "topic", lim)?,
                    subscribe: i.subscribe(),
                    from: decode_from(
                        i.from_type(),
                        i.from_as_from_latest(),
                        i.from_as_from_position(),
                        i.from_as_from_last_n(),
                    )?,
                }
            }
            fb::LinkBody::LinkSubscribed => {
                let s = m.body_as_link_subscribed().ok_or(missing)?;
                LinkMsg::Subscribed {
                    request_id: s.request_id(),
                    epoch: s.epoch(),
                    next_seq: s.next_seq(),
                }
            }
            fb::LinkBody::LinkItemBatch => {
                let b = m.body_as_link_item_batch().ok_or(missing)?;
                let items = b.items();
                if items.len() > lim.batch_items_max {
                    return Err(DecodeError::TooLarge {
                        field: "items",
                        len: items.len(),
                        max: lim.batch_items_max,
                    });
                }
                LinkMsg::ItemBatch {
                    request_id: b.request_id(),
                    namespace: checked_name(Some(b.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(b.topic()), "topic", lim)?,
                    epoch: b.epoch(),
                    items: items
                        .iter()
                        .map(|i| {
                            Ok(LinkItem {
                                seq: i.seq(),
                                payload: checked_payload(i.payload(), buf, lim)?,
                                publisher_id: checked_str(
                                    i.publisher_id(),
                                    "publisher_id",
                                    TEXT_BYTES_MAX,
                                )?,
                            })
                        })
                        .collect::<Result<_, DecodeError>>()?,
                }
            }
            fb::LinkBody::LinkDiscontinuity => {
                let d = m.body_as_link_discontinuity().ok_or(missing)?;
                LinkMsg::Discontinuity {
                    request_id: d.request_id(),
                    namespace: checked_name(Some(d.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(d.topic()), "topic", lim)?,
                    last_seq: d.last_seq(),
                    new_seq: d.new_seq(),
                    new_epoch: d.new_epoch(),
                }
            }
            fb::LinkBody::LinkError => {
                let e = m.body_as_link_error().ok_or(missing)?;
                LinkMsg::Error {
                    request_id: e.request_id(),
                    code: ErrorCode::from_u16(e.code().0),
                    text: checked_str(e.text(), "text", TEXT_BYTES_MAX)?.unwrap_or_default(),
                }
            }
            other => return Err(DecodeError::UnknownType(other.0)),
        };
        Ok(msg)
    }

    /// Encodes into `fbb` (which is reset first); the bytes are `fbb.finished_data()`.
    pub fn encode_into(&self, fbb: &mut FlatBufferBuilder<'_>) {
        fbb.reset();
        let (ty, body) = match self {
            LinkMsg::Hello {
                version,
                node_id,
                shard,
            } => {
                let node_id = Some(fbb.create_string(node_id));
                (
                    fb::LinkBody::LinkHello,
                    fb::LinkHello::create(
                        fbb,
                        &fb::LinkHelloArgs {
                            version: *version,
                            node_id,
                            shard: *shard,
                        },
                    )
                    .as_union_value(),
                )
            }
            LinkMsg::Publish {
                request_id,
                namespace,
                topic,
                payload,
                publisher_id,
                idempotency_key,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let payload = opt_bytes(fbb, payload);
                let publisher_id = opt_str(fbb, publisher_id.as_deref());
                let idempotency_key = opt_str(fbb, idempotency_key.as_deref());
                (
                    fb::LinkBody::LinkPublish,
                    fb::LinkPublish::create(
                        fbb,
                        &fb::LinkPublishArgs {
                            request_id: *request_id,
                            namespace,
                            topic,
                            payload,
                            publisher_id,
                            idempotency_key,
                        },
                    )
                    .as_union_value(),
                )
            }
            LinkMsg::PublishAck {
                request_id,
                epoch,
                seq,
            } => (
                fb::LinkBody::LinkPublishAck,
                fb::LinkPublishAck::create(
                    fbb,
                    &fb::LinkPublishAckArgs {
                        request_id: *request_id,
                        epoch: *epoch,
                        seq: *seq,
                    },
                )
                .as_union_value(),
            ),
            LinkMsg::Interest {
                request_id,
                namespace,
                topic,
                subscribe,
                from,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let (from_type, from) = encode_from(fbb, *from);
                (
                    fb::LinkBody::LinkInterest,
                    fb::LinkInterest::create(
                        fbb,
                        &fb::LinkInterestArgs {
                            request_id: *request_id,
                            namespace,
                            topic,
                            subscribe: *subscribe,
                            from_type,
                            from: Some(from),
                        },
                    )
                    .as_union_value(),
                )
            }
            LinkMsg::Subscribed {
                request_id,
                epoch,
                next_seq,
            } => (
                fb::LinkBody::LinkSubscribed,
                fb::LinkSubscribed::create(
                    fbb,
                    &fb::LinkSubscribedArgs {
                        request_id: *request_id,
                        epoch: *epoch,
                        next_seq: *next_seq,
                    },
                )
                .as_union_value(),
            ),
            LinkMsg::ItemBatch {
                request_id,
                namespace,
                topic,
                epoch,
                items,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let offs: Vec<_> = items
                    .iter()
                    .map(|i| {
                        let payload = opt_bytes(fbb, &i.payload);
                        let publisher_id = opt_str(fbb, i.publisher_id.as_deref());
                        fb::LinkItem::create(
                            fbb,
                            &fb::LinkItemArgs {
                                seq: i.seq,
                                payload,
                                publisher_id,
                            },
                        )
                    })
                    .collect();
                let items = Some(fbb.create_vector(&offs));
                (
                    fb::LinkBody::LinkItemBatch,
                    fb::LinkItemBatch::create(
                        fbb,
                        &fb::LinkItemBatchArgs {
                            request_id: *request_id,
                            namespace,
                            topic,
                            epoch: *epoch,
                            items,
                        },
                    )
                    .as_union_value(),
                )
            }
            LinkMsg::Discontinuity {
                request_id,
                namespace,
                topic,
                last_seq,
                new_seq,
                new_epoch,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                (
                    fb::LinkBody::LinkDiscontinuity,
                    fb::LinkDiscontinuity::create(
                        fbb,
                        &fb::LinkDiscontinuityArgs {
                            request_id: *request_id,
                            namespace,
                            topic,
                            last_seq: *last_seq,
                            new_seq: *new_seq,
                            new_epoch: *new_epoch,
                        },
                    )
                    .as_union_value(),
                )
            }
            LinkMsg::Error {
                request_id,
                code,
                text,
            } => {
                let text = Some(fbb.create_string(text));
                (
                    fb::LinkBody::LinkError,
                    fb::LinkError::create(
                        fbb,
                        &fb::LinkErrorArgs {
                            request_id: *request_id,
                            code: code.wire(),
                            text,
                        },
                    )
                    .as_union_value(),
                )
            }
        };
        let root = fb::LinkMessage::create(
            fbb,
            &fb::LinkMessageArgs {
                body_type: ty,
                body: Some(body),
            },
        );
        fbb.finish_minimal(root);
    }

    /// Encodes into a fresh vector.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        self.encode_into(&mut fbb);
        fbb.finished_data().to_vec()
    }
}
