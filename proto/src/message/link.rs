//! [`LinkMsg`]: what router and storage nodes say on a node link.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use super::common::*;
use super::presence::{
    create_members, create_state, decode_event, decode_members, decode_state, event_parts,
    MemberMsg, PresenceEventMsg, PresenceStateMsg, Query, PRESENCE_PAGE_MAX,
};
use super::server::{create_error, decode_error, Ack};
use crate::generated::fanfare::wire as fb;
use crate::names::Name;

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
        namespace: Name,
        /// Topic.
        topic: Name,
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
        /// How the owner kept it (acknowledged after a sync, a write, or in memory).
        durability: Durability,
    },
    /// Add (or drop) a router shard's interest in a topic.
    Interest {
        /// Echoed in the answer.
        request_id: u64,
        /// Namespace.
        namespace: Name,
        /// Topic.
        topic: Name,
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
        namespace: Name,
        /// Topic.
        topic: Name,
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
        namespace: Name,
        /// Topic.
        topic: Name,
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
    /// Router to storage: a change of the presence a router shard holds for a topic.
    Presence {
        /// Namespace.
        namespace: Name,
        /// Topic.
        topic: Name,
        /// Replaces what the router shard held (else a delta).
        reset: bool,
        /// Reset: its subscriber count; else the change.
        count: i64,
        /// Members entering (at most [`PRESENCE_PAGE_MAX`]).
        joins: Vec<MemberMsg>,
        /// Member ids leaving (at most [`PRESENCE_PAGE_MAX`]).
        leaves: Vec<u64>,
    },
    /// Storage to router: a presence event of a topic.
    PresenceEvent {
        /// Namespace.
        namespace: Name,
        /// Topic.
        topic: Name,
        /// The event.
        event: PresenceEventMsg,
    },
    /// Router to storage: a presence query.
    PresenceQuery {
        /// Echoed in the answer.
        request_id: u64,
        /// Namespace.
        namespace: Name,
        /// Topic.
        topic: Name,
        /// Whether to list members.
        members: bool,
        /// Members with ids above this.
        after: u64,
        /// Page size.
        limit: u32,
    },
    /// Storage to router: the answer to `PresenceQuery`.
    PresenceState {
        /// From the query.
        request_id: u64,
        /// The answer.
        state: PresenceStateMsg,
    },
}

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
                let Ack {
                    request_id,
                    epoch,
                    seq,
                    durability,
                } = Ack::decode(m.body_as_link_publish_ack().ok_or(missing)?);
                LinkMsg::PublishAck {
                    request_id,
                    epoch,
                    seq,
                    durability,
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
                let (request_id, code, text) =
                    decode_error(m.body_as_link_error().ok_or(missing)?)?;
                LinkMsg::Error {
                    request_id,
                    code,
                    text,
                }
            }
            fb::LinkBody::LinkPresence => {
                let p = m.body_as_link_presence().ok_or(missing)?;
                let leaves: Vec<u64> = p.leaves().map(|v| v.iter().collect()).unwrap_or_default();
                if leaves.len() > PRESENCE_PAGE_MAX {
                    return Err(DecodeError::TooLarge {
                        field: "leaves",
                        len: leaves.len(),
                        max: PRESENCE_PAGE_MAX,
                    });
                }
                if p.reset() && p.count() < 0 {
                    return Err(DecodeError::Invalid(
                        "a presence reset with a negative count",
                    ));
                }
                LinkMsg::Presence {
                    namespace: checked_name(Some(p.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(p.topic()), "topic", lim)?,
                    reset: p.reset(),
                    count: p.count(),
                    joins: decode_members(p.joins(), buf)?,
                    leaves,
                }
            }
            fb::LinkBody::LinkPresenceEvent => {
                let e = m.body_as_link_presence_event().ok_or(missing)?;
                LinkMsg::PresenceEvent {
                    namespace: checked_name(Some(e.namespace()), "namespace", lim)?,
                    topic: checked_name(Some(e.topic()), "topic", lim)?,
                    event: decode_event(e.action(), e.member(), e.occupancy(), e.skipped(), buf)?,
                }
            }
            fb::LinkBody::LinkPresenceQuery => {
                let Query {
                    request_id,
                    namespace,
                    topic,
                    members,
                    after,
                    limit,
                } = Query::decode(m.body_as_link_presence_query().ok_or(missing)?, lim)?;
                LinkMsg::PresenceQuery {
                    request_id,
                    namespace,
                    topic,
                    members,
                    after,
                    // Capped, not refused: the client's own limit was checked when the
                    // router decoded its query.
                    limit: limit.min(PRESENCE_PAGE_MAX as u32),
                }
            }
            fb::LinkBody::LinkPresenceState => {
                let (request_id, state) =
                    decode_state(m.body_as_link_presence_state().ok_or(missing)?, buf)?;
                LinkMsg::PresenceState { request_id, state }
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
                durability,
            } => (
                fb::LinkBody::LinkPublishAck,
                Ack {
                    request_id: *request_id,
                    epoch: *epoch,
                    seq: *seq,
                    durability: *durability,
                }
                .create(fbb)
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
            } => (
                fb::LinkBody::LinkError,
                create_error(fbb, *request_id, *code, text).as_union_value(),
            ),
            LinkMsg::Presence {
                namespace,
                topic,
                reset,
                count,
                joins,
                leaves,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let joins = create_members(fbb, joins);
                let leaves = (!leaves.is_empty()).then(|| fbb.create_vector(leaves));
                (
                    fb::LinkBody::LinkPresence,
                    fb::LinkPresence::create(
                        fbb,
                        &fb::LinkPresenceArgs {
                            namespace,
                            topic,
                            reset: *reset,
                            count: *count,
                            joins,
                            leaves,
                        },
                    )
                    .as_union_value(),
                )
            }
            LinkMsg::PresenceEvent {
                namespace,
                topic,
                event,
            } => {
                let namespace = Some(fbb.create_string(namespace));
                let topic = Some(fbb.create_string(topic));
                let (action, member) = event_parts(fbb, event);
                (
                    fb::LinkBody::LinkPresenceEvent,
                    fb::LinkPresenceEvent::create(
                        fbb,
                        &fb::LinkPresenceEventArgs {
                            namespace,
                            topic,
                            action,
                            member,
                            occupancy: event.occupancy,
                            skipped: event.skipped,
                        },
                    )
                    .as_union_value(),
                )
            }
            LinkMsg::PresenceQuery {
                request_id,
                namespace,
                topic,
                members,
                after,
                limit,
            } => (
                fb::LinkBody::LinkPresenceQuery,
                Query {
                    request_id: *request_id,
                    namespace,
                    topic,
                    members: *members,
                    after: *after,
                    limit: *limit,
                }
                .create(fbb)
                .as_union_value(),
            ),
            LinkMsg::PresenceState { request_id, state } => (
                fb::LinkBody::LinkPresenceState,
                create_state(fbb, *request_id, state).as_union_value(),
            ),
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
