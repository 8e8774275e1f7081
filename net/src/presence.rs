//! Presence at the edge: the conversions between the engine's presence types and the wire's,
//! and the JSON of the HTTP
//! presence endpoint and of SSE presence events.

use std::sync::Arc;

use base64::Engine as _;
use fanfare_core::{Member, MemberId, PresenceEvent, PresenceState};
use fanfare_proto::message::{MemberMsg, PresenceEventMsg, PresenceStateMsg};
use fanfare_proto::PresenceAction;
use serde_json::{json, Value};

/// Who a member is listed as with authentication off and no `client_id` given.
pub const ANONYMOUS: &str = "anonymous";

/// Default page size of a presence query that names none.
pub const PAGE_DEFAULT: usize = 100;

/// A member on the wire.
pub fn member_msg(m: &Member) -> MemberMsg {
    MemberMsg {
        member_id: m.id.0,
        client_id: m.client_id.to_string(),
        info: m.info.clone(),
    }
}

/// A member from the wire.
pub fn member_of(m: MemberMsg) -> Member {
    Member {
        id: MemberId(m.member_id),
        client_id: Arc::from(m.client_id),
        info: m.info,
    }
}

/// An event on the wire.
pub fn event_msg(e: &PresenceEvent) -> PresenceEventMsg {
    PresenceEventMsg {
        action: e.action,
        member: e.member.as_ref().map(member_msg),
        occupancy: e.occupancy,
        skipped: e.skipped,
    }
}

/// An event from the wire.
pub fn event_of(e: PresenceEventMsg) -> PresenceEvent {
    PresenceEvent {
        action: e.action,
        member: e.member.map(member_of),
        occupancy: e.occupancy,
        skipped: e.skipped,
    }
}

/// A state on the wire.
pub fn state_msg(s: &PresenceState) -> PresenceStateMsg {
    PresenceStateMsg {
        occupancy: s.occupancy,
        members_total: s.members_total,
        members: s.members.iter().map(member_msg).collect(),
        next_after: s.next_after,
    }
}

/// A state from the wire.
pub fn state_of(s: PresenceStateMsg) -> PresenceState {
    PresenceState {
        occupancy: s.occupancy,
        members_total: s.members_total,
        members: s.members.into_iter().map(member_of).collect(),
        next_after: s.next_after,
    }
}

fn action_name(a: PresenceAction) -> &'static str {
    match a {
        PresenceAction::Join => "join",
        PresenceAction::Leave => "leave",
        PresenceAction::Occupancy => "occupancy",
        PresenceAction::Refused => "refused",
        PresenceAction::Overflow => "overflow",
    }
}

fn member_json(m: &MemberMsg) -> Value {
    json!({
        "member_id": m.member_id.to_string(),
        "client_id": m.client_id,
        "info": base64::engine::general_purpose::STANDARD.encode(&m.info),
    })
}

/// A presence event as JSON (the data of an SSE `presence` event).
pub fn event_json(e: &PresenceEventMsg) -> Value {
    let mut v = json!({
        "action": action_name(e.action),
        "occupancy": e.occupancy,
    });
    if let Some(m) = &e.member {
        v["member"] = member_json(m);
    }
    if e.action == PresenceAction::Overflow {
        v["skipped"] = json!(e.skipped);
    }
    v
}

/// The body of `GET /v1/topics/{ns}/{topic}/presence`. Member ids are strings: they use all
/// 64 bits, past what a JavaScript number holds exactly.
pub fn state_json(s: &PresenceState) -> String {
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| member_json(&member_msg(m)))
        .collect();
    let mut v = json!({
        "occupancy": s.occupancy,
        "members_total": s.members_total,
        "members": members,
    });
    if s.next_after != 0 {
        v["next_after"] = json!(s.next_after.to_string());
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn json_forms() {
        let s = PresenceState {
            occupancy: 3,
            members_total: 2,
            members: vec![Member {
                id: MemberId(u64::MAX),
                client_id: Arc::from("a\"b"),
                info: Bytes::from_static(b"hi"),
            }],
            next_after: 7,
        };
        let v: Value = serde_json::from_str(&state_json(&s)).unwrap();
        assert_eq!(v["occupancy"], 3);
        assert_eq!(v["members"][0]["member_id"], u64::MAX.to_string());
        assert_eq!(v["members"][0]["client_id"], "a\"b");
        assert_eq!(v["members"][0]["info"], "aGk=");
        assert_eq!(v["next_after"], "7");
        let e = event_json(&PresenceEventMsg {
            action: PresenceAction::Overflow,
            member: None,
            occupancy: 9,
            skipped: 4,
        });
        assert_eq!(e["action"], "overflow");
        assert_eq!(e["skipped"], 4);
    }
}
