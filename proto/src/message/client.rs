//! [`ClientMsg`]: what a client sends the server.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use super::common::*;
use super::presence::{create_opts, decode_opts, PresenceOpts, Query, PRESENCE_PAGE_MAX};
use crate::generated::fanfare::wire as fb;
use crate::names::Name;

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
        namespace: Name,
        /// The topic.
        topic: Name,
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
        namespace: Name,
        /// The topic.
        topic: Name,
        /// Where to start.
        from: Start,
        /// Presence options (none when absent).
        presence: Option<PresenceOpts>,
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
    /// A topic's occupancy and, with `members`, a page of its members.
    PresenceQuery {
        /// Echoed in `PresenceState` or the error.
        request_id: u64,
        /// The topic's namespace.
        namespace: Name,
        /// The topic.
        topic: Name,
        /// Whether to list members (needs the presence right).
        members: bool,
        /// List members with ids above this (0: from the first).
        after: u64,
        /// Page size (0: the server's default; at most [`PRESENCE_PAGE_MAX`]).
        limit: u32,
    },
}

impl ClientMsg {
    /// The request id of a message that did not decode, when its envelope is readable (a name
    /// or size check failed after the verifier passed it), so the error can name the request
    /// it answers; 0 otherwise. For the error path only: it verifies the buffer again.
    pub fn request_id_of(buf: &Bytes, lim: &DecodeLimits) -> u64 {
        let opts = lim.verifier(buf.len(), VERIFY_TABLES_NONBATCH);
        let Ok(m) = flatbuffers::root_with_opts::<fb::ClientMessage>(&opts, buf) else {
            return 0;
        };
        match m.body_type() {
            fb::ClientBody::Publish => m.body_as_publish().map(|p| p.request_id()),
            fb::ClientBody::Subscribe => m.body_as_subscribe().map(|s| s.request_id()),
            fb::ClientBody::Unsubscribe => m.body_as_unsubscribe().map(|u| u.request_id()),
            fb::ClientBody::RefreshToken => m.body_as_refresh_token().map(|r| r.request_id()),
            fb::ClientBody::PresenceQuery => m.body_as_presence_query().map(|q| q.request_id()),
            _ => None,
        }
        .unwrap_or(0)
    }

    /// `ClientMsg::decode` (in `fast.rs`) through the generic flatbuffers verifier for every message (the
    /// reference the publish decoder is tested and fuzzed against).
    #[doc(hidden)]
    pub fn decode_general(buf: &Bytes, lim: &DecodeLimits) -> Result<Self, DecodeError> {
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
                    presence: decode_opts(s.presence(), buf)?,
                }
            }
            fb::ClientBody::PresenceQuery => {
                let q = m
                    .body_as_presence_query()
                    .ok_or(DecodeError::Missing("body"))?;
                // A client asking for a larger page than any is refused (before its names are
                // checked); a link query is capped instead (link.rs).
                if q.limit() as usize > PRESENCE_PAGE_MAX {
                    return Err(DecodeError::TooLarge {
                        field: "limit",
                        len: q.limit() as usize,
                        max: PRESENCE_PAGE_MAX,
                    });
                }
                let Query {
                    request_id,
                    namespace,
                    topic,
                    members,
                    after,
                    limit,
                } = Query::decode(q, lim)?;
                ClientMsg::PresenceQuery {
                    request_id,
                    namespace,
                    topic,
                    members,
                    after,
                    limit,
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
                presence,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let (from_type, from) = encode_from(fbb, *from);
                let presence = presence.as_ref().map(|o| create_opts(fbb, o));
                let b = fb::Subscribe::create(
                    fbb,
                    &fb::SubscribeArgs {
                        request_id: *request_id,
                        namespace,
                        topic,
                        from_type,
                        from: Some(from),
                        presence,
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
            ClientMsg::PresenceQuery {
                request_id,
                namespace,
                topic,
                members,
                after,
                limit,
            } => {
                let b = Query {
                    request_id: *request_id,
                    namespace,
                    topic,
                    members: *members,
                    after: *after,
                    limit: *limit,
                }
                .create(fbb);
                (fb::ClientBody::PresenceQuery, b.as_union_value())
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
