//! [`ServerMsg`]: what the server sends a client, and the fan-out item encoder
//! ([`encode_item`]) every subscriber on a shard shares.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::common::*;
use super::presence::{
    create_state, decode_event, decode_state, event_parts, PresenceEventMsg, PresenceStateMsg,
};
use crate::generated::fanfare::wire as fb;

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
        /// How the owner kept it (acknowledged after a sync, a write, or in memory).
        durability: Durability,
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
        /// Its presence member id (0: not listed).
        member_id: u64,
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
    /// A presence event on a subscription that asked for it.
    PresenceEvent {
        /// The subscription.
        subscription_id: u64,
        /// The event.
        event: PresenceEventMsg,
    },
    /// Answer to `PresenceQuery`.
    PresenceState {
        /// From the query.
        request_id: u64,
        /// The topic's presence (one page of members).
        state: PresenceStateMsg,
    },
}

/// What a `PublishAck` table says. The server's acknowledgement and the link's
/// (`LinkPublishAck`) are this one table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    pub(super) request_id: u64,
    pub(super) epoch: u64,
    pub(super) seq: u64,
    pub(super) durability: Durability,
}

impl Ack {
    pub(super) fn decode(a: fb::PublishAck<'_>) -> Self {
        Ack {
            request_id: a.request_id(),
            epoch: a.epoch(),
            seq: a.seq(),
            durability: Durability::from_u8(a.durability().0),
        }
    }

    pub(super) fn create<'a>(
        self,
        fbb: &mut FlatBufferBuilder<'a>,
    ) -> WIPOffset<fb::PublishAck<'a>> {
        fb::PublishAck::create(
            fbb,
            &fb::PublishAckArgs {
                request_id: self.request_id,
                epoch: self.epoch,
                seq: self.seq,
                durability: self.durability.wire(),
            },
        )
    }
}

/// An `Error` table's request id, code and text (checked against [`TEXT_BYTES_MAX`]). The
/// server's errors and the link's (`LinkError`) are this one table.
pub(super) fn decode_error(e: fb::Error<'_>) -> Result<(u64, ErrorCode, String), DecodeError> {
    Ok((
        e.request_id(),
        ErrorCode::from_u16(e.code().0),
        checked_str(e.text(), "text", TEXT_BYTES_MAX)?.unwrap_or_default(),
    ))
}

pub(super) fn create_error<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    request_id: u64,
    code: ErrorCode,
    text: &str,
) -> WIPOffset<fb::Error<'a>> {
    let text = Some(fbb.create_string(text));
    fb::Error::create(
        fbb,
        &fb::ErrorArgs {
            request_id,
            code: code.wire(),
            text,
        },
    )
}

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
                let Ack {
                    request_id,
                    epoch,
                    seq,
                    durability,
                } = Ack::decode(m.body_as_publish_ack().ok_or(missing)?);
                ServerMsg::PublishAck {
                    request_id,
                    epoch,
                    seq,
                    durability,
                }
            }
            fb::ServerBody::Subscribed => {
                let s = m.body_as_subscribed().ok_or(missing)?;
                ServerMsg::Subscribed {
                    request_id: s.request_id(),
                    subscription_id: s.subscription_id(),
                    epoch: s.epoch(),
                    next_seq: s.next_seq(),
                    member_id: s.member_id(),
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
                let (request_id, code, text) = decode_error(m.body_as_error().ok_or(missing)?)?;
                ServerMsg::Error {
                    request_id,
                    code,
                    text,
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
            fb::ServerBody::PresenceEvent => {
                let e = m.body_as_presence_event().ok_or(missing)?;
                ServerMsg::PresenceEvent {
                    subscription_id: e.subscription_id(),
                    event: decode_event(e.action(), e.member(), e.occupancy(), e.skipped(), buf)?,
                }
            }
            fb::ServerBody::PresenceState => {
                let (request_id, state) =
                    decode_state(m.body_as_presence_state().ok_or(missing)?, buf)?;
                ServerMsg::PresenceState { request_id, state }
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
                durability,
            } => (
                fb::ServerBody::PublishAck,
                Ack {
                    request_id: *request_id,
                    epoch: *epoch,
                    seq: *seq,
                    durability: *durability,
                }
                .create(fbb)
                .as_union_value(),
            ),
            ServerMsg::Subscribed {
                request_id,
                subscription_id,
                epoch,
                next_seq,
                member_id,
            } => (
                fb::ServerBody::Subscribed,
                fb::Subscribed::create(
                    fbb,
                    &fb::SubscribedArgs {
                        request_id: *request_id,
                        subscription_id: *subscription_id,
                        epoch: *epoch,
                        next_seq: *next_seq,
                        member_id: *member_id,
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
            } => (
                fb::ServerBody::Error,
                create_error(fbb, *request_id, *code, text).as_union_value(),
            ),
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
            ServerMsg::PresenceEvent {
                subscription_id,
                event,
            } => {
                let (action, member) = event_parts(fbb, event);
                (
                    fb::ServerBody::PresenceEvent,
                    fb::PresenceEvent::create(
                        fbb,
                        &fb::PresenceEventArgs {
                            subscription_id: *subscription_id,
                            action,
                            member,
                            occupancy: event.occupancy,
                            skipped: event.skipped,
                        },
                    )
                    .as_union_value(),
                )
            }
            ServerMsg::PresenceState { request_id, state } => (
                fb::ServerBody::PresenceState,
                create_state(fbb, *request_id, state).as_union_value(),
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
