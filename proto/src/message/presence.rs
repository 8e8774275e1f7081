//! Presence on the wire: members, presence events, the state a query answers, and the
//! options a subscription asks with. Shared by the client, server and link messages.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::common::*;
use crate::generated::fanfare::wire as fb;
use crate::names::Name;

/// Largest presence `info` blob the decoder accepts, in bytes (servers apply a smaller,
/// configurable limit).
pub const PRESENCE_INFO_BYTES_MAX: usize = 4096;
/// Largest presence `client_id`, in bytes.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// Most members one presence page carries.
pub const PRESENCE_PAGE_MAX: usize = 1000;

/// One presence member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMsg {
    /// Names the member's subscription cluster-wide while it lasts (never 0).
    pub member_id: u64,
    /// Who: the token's subject, or the client's choice with authentication off.
    pub client_id: String,
    /// The member's own blob.
    pub info: Bytes,
}

/// What a presence event says (the schema's `PresenceAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceAction {
    /// A member entered.
    Join,
    /// A member left.
    Leave,
    /// The subscriber count changed.
    Occupancy,
    /// This subscription could not be listed (the topic's member limit).
    Refused,
    /// Join/leave events were skipped (rate limit): read the list again.
    Overflow,
}

impl PresenceAction {
    fn wire(self) -> fb::PresenceAction {
        match self {
            PresenceAction::Join => fb::PresenceAction::Join,
            PresenceAction::Leave => fb::PresenceAction::Leave,
            PresenceAction::Occupancy => fb::PresenceAction::Occupancy,
            PresenceAction::Refused => fb::PresenceAction::Refused,
            PresenceAction::Overflow => fb::PresenceAction::Overflow,
        }
    }

    fn from_wire(a: fb::PresenceAction) -> Result<Self, DecodeError> {
        Ok(match a {
            fb::PresenceAction::Join => PresenceAction::Join,
            fb::PresenceAction::Leave => PresenceAction::Leave,
            fb::PresenceAction::Occupancy => PresenceAction::Occupancy,
            fb::PresenceAction::Refused => PresenceAction::Refused,
            fb::PresenceAction::Overflow => PresenceAction::Overflow,
            _ => return Err(DecodeError::Invalid("unknown presence action")),
        })
    }
}

/// A presence event (without the subscription it is for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEventMsg {
    /// What happened.
    pub action: PresenceAction,
    /// The member joining, leaving or refused.
    pub member: Option<MemberMsg>,
    /// The topic's subscriber count when the event was made.
    pub occupancy: u64,
    /// `Overflow`: how many events were not sent.
    pub skipped: u64,
}

/// A page of a topic's presence (the answer to a presence query).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceStateMsg {
    /// Subscribers of the topic, cluster-wide.
    pub occupancy: u64,
    /// Members listed in all.
    pub members_total: u64,
    /// This page, in member id order.
    pub members: Vec<MemberMsg>,
    /// 0 on the last page; else the `after` of the next.
    pub next_after: u64,
}

/// A subscription's presence options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceOpts {
    /// Be listed while subscribed.
    pub enter: bool,
    /// Shown with the member.
    pub info: Bytes,
    /// The identity to list (authentication off only).
    pub client_id: Option<String>,
    /// Receive join, leave and overflow events.
    pub member_events: bool,
    /// Receive occupancy events.
    pub occupancy_events: bool,
}

fn checked_info(v: Option<flatbuffers::Vector<'_, u8>>, src: &Bytes) -> Result<Bytes, DecodeError> {
    let Some(v) = v else {
        return Ok(Bytes::new());
    };
    let b = v.bytes();
    if b.len() > PRESENCE_INFO_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            field: "info",
            len: b.len(),
            max: PRESENCE_INFO_BYTES_MAX,
        });
    }
    // The verifier proved the vector lies inside `src`.
    Ok(if b.is_empty() {
        Bytes::new()
    } else {
        src.slice_ref(b)
    })
}

pub(super) fn decode_member(m: fb::Member<'_>, src: &Bytes) -> Result<MemberMsg, DecodeError> {
    if m.member_id() == 0 {
        return Err(DecodeError::Invalid("a member id is never 0"));
    }
    Ok(MemberMsg {
        member_id: m.member_id(),
        client_id: checked_str(m.client_id(), "client_id", CLIENT_ID_BYTES_MAX)?
            .unwrap_or_default(),
        info: checked_info(m.info(), src)?,
    })
}

pub(super) fn decode_members(
    v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::Member<'_>>>>,
    src: &Bytes,
) -> Result<Vec<MemberMsg>, DecodeError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    if v.len() > PRESENCE_PAGE_MAX {
        return Err(DecodeError::TooLarge {
            field: "members",
            len: v.len(),
            max: PRESENCE_PAGE_MAX,
        });
    }
    v.iter().map(|m| decode_member(m, src)).collect()
}

pub(super) fn create_member<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    m: &MemberMsg,
) -> WIPOffset<fb::Member<'a>> {
    let client_id = Some(fbb.create_string(&m.client_id));
    let info = opt_bytes(fbb, &m.info);
    fb::Member::create(
        fbb,
        &fb::MemberArgs {
            member_id: m.member_id,
            client_id,
            info,
        },
    )
}

pub(super) fn create_members<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    ms: &[MemberMsg],
) -> Option<WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::Member<'a>>>>> {
    if ms.is_empty() {
        return None;
    }
    let offs: Vec<_> = ms.iter().map(|m| create_member(fbb, m)).collect();
    Some(fbb.create_vector(&offs))
}

/// A `PresenceState` table's request id and state. The server's answer to a presence query
/// and the link's (`LinkPresenceState`) are this one table.
pub(super) fn decode_state(
    p: fb::PresenceState<'_>,
    src: &Bytes,
) -> Result<(u64, PresenceStateMsg), DecodeError> {
    Ok((
        p.request_id(),
        PresenceStateMsg {
            occupancy: p.occupancy(),
            members_total: p.members_total(),
            members: decode_members(p.members(), src)?,
            next_after: p.next_after(),
        },
    ))
}

pub(super) fn create_state<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    request_id: u64,
    s: &PresenceStateMsg,
) -> WIPOffset<fb::PresenceState<'a>> {
    let members = create_members(fbb, &s.members);
    fb::PresenceState::create(
        fbb,
        &fb::PresenceStateArgs {
            request_id,
            occupancy: s.occupancy,
            members_total: s.members_total,
            members,
            next_after: s.next_after,
        },
    )
}

/// What a `PresenceQuery` table asks. The client's query and the link's
/// (`LinkPresenceQuery`) are this one table. `N` is [`Name`] when decoded, a borrowed name
/// when encoding; `limit` is as sent (each family applies its own rule to it).
#[derive(Debug, Clone)]
pub(super) struct Query<N> {
    pub(super) request_id: u64,
    pub(super) namespace: N,
    pub(super) topic: N,
    pub(super) members: bool,
    pub(super) after: u64,
    pub(super) limit: u32,
}

impl Query<Name> {
    pub(super) fn decode(
        q: fb::PresenceQuery<'_>,
        lim: &DecodeLimits,
    ) -> Result<Self, DecodeError> {
        Ok(Query {
            request_id: q.request_id(),
            namespace: checked_name(Some(q.namespace()), "namespace", lim)?,
            topic: checked_name(Some(q.topic()), "topic", lim)?,
            members: q.members(),
            after: q.after(),
            limit: q.limit(),
        })
    }
}

impl<N: AsRef<str>> Query<N> {
    pub(super) fn create<'a>(
        &self,
        fbb: &mut FlatBufferBuilder<'a>,
    ) -> WIPOffset<fb::PresenceQuery<'a>> {
        let namespace = Some(fbb.create_string(self.namespace.as_ref()));
        let topic = Some(fbb.create_string(self.topic.as_ref()));
        fb::PresenceQuery::create(
            fbb,
            &fb::PresenceQueryArgs {
                request_id: self.request_id,
                namespace,
                topic,
                members: self.members,
                after: self.after,
                limit: self.limit,
            },
        )
    }
}

pub(super) fn decode_opts(
    o: Option<fb::PresenceOptions<'_>>,
    src: &Bytes,
) -> Result<Option<PresenceOpts>, DecodeError> {
    let Some(o) = o else {
        return Ok(None);
    };
    Ok(Some(PresenceOpts {
        enter: o.enter(),
        info: checked_info(o.info(), src)?,
        client_id: checked_str(o.client_id(), "client_id", CLIENT_ID_BYTES_MAX)?,
        member_events: o.member_events(),
        occupancy_events: o.occupancy_events(),
    }))
}

pub(super) fn create_opts<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    o: &PresenceOpts,
) -> WIPOffset<fb::PresenceOptions<'a>> {
    let info = opt_bytes(fbb, &o.info);
    let client_id = opt_str(fbb, o.client_id.as_deref());
    fb::PresenceOptions::create(
        fbb,
        &fb::PresenceOptionsArgs {
            enter: o.enter,
            info,
            client_id,
            member_events: o.member_events,
            occupancy_events: o.occupancy_events,
        },
    )
}

/// The parts of an event table every event message shares.
pub(super) fn decode_event(
    action: fb::PresenceAction,
    member: Option<fb::Member<'_>>,
    occupancy: u64,
    skipped: u64,
    src: &Bytes,
) -> Result<PresenceEventMsg, DecodeError> {
    let action = PresenceAction::from_wire(action)?;
    let member = member.map(|m| decode_member(m, src)).transpose()?;
    if member.is_none()
        && matches!(
            action,
            PresenceAction::Join | PresenceAction::Leave | PresenceAction::Refused
        )
    {
        return Err(DecodeError::Missing("member"));
    }
    Ok(PresenceEventMsg {
        action,
        member,
        occupancy,
        skipped,
    })
}

pub(super) fn event_parts<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    e: &PresenceEventMsg,
) -> (fb::PresenceAction, Option<WIPOffset<fb::Member<'a>>>) {
    let member = e.member.as_ref().map(|m| create_member(fbb, m));
    (e.action.wire(), member)
}
