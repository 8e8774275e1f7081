//! Presence and occupancy over real sockets: members entering and leaving (a closed
//! connection leaves at once), listing with paging over WebSocket and HTTP, occupancy events,
//! the member and event limits, and the presence right.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_net::auth::{mint, unix_now, Algorithm, Claims, Key, PermissionClaim};
use fanfare_proto::message::{ErrorCode, PresenceAction, PresenceOpts, PresenceStateMsg};
use fanfare_proto::{ClientMsg, ServerMsg, Start};
use serde_json::Value;

mod common;
use common::{curl, recv, rt, send, server_with, ws, Ws, WAIT};
#[path = "../../tests/common/eventually.rs"]
mod eventually;
use eventually::eventually_async;

fn opts(enter: Option<&str>, member_events: bool, occupancy_events: bool) -> PresenceOpts {
    PresenceOpts {
        enter: enter.is_some(),
        info: Bytes::from_static(b"{\"mood\":\"fine\"}"),
        client_id: enter.filter(|c| !c.is_empty()).map(str::to_owned),
        member_events,
        occupancy_events,
    }
}

/// Subscribes to ns/`topic` with presence options; the `Subscribed` answer's subscription id
/// and member id, or the error.
async fn join_sub(
    ws: &mut Ws,
    topic: &str,
    o: PresenceOpts,
) -> Result<(u64, u64), (ErrorCode, String)> {
    send(
        ws,
        ClientMsg::Subscribe {
            request_id: 1,
            namespace: "ns".try_into().unwrap(),
            topic: topic.try_into().unwrap(),
            from: Start::Latest,
            presence: Some(o),
        },
    )
    .await;
    loop {
        match recv(ws).await {
            ServerMsg::Subscribed {
                subscription_id,
                member_id,
                ..
            } => return Ok((subscription_id, member_id)),
            ServerMsg::Error { code, text, .. } => return Err((code, text)),
            ServerMsg::PresenceEvent { .. } => {} // of an earlier subscription
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }
}

/// [`join_sub`]'s member id.
async fn join(ws: &mut Ws, topic: &str, o: PresenceOpts) -> Result<u64, (ErrorCode, String)> {
    join_sub(ws, topic, o).await.map(|(_, m)| m)
}

async fn query(
    ws: &mut Ws,
    topic: &str,
    members: bool,
    after: u64,
    limit: u32,
) -> Result<PresenceStateMsg, ErrorCode> {
    send(
        ws,
        ClientMsg::PresenceQuery {
            request_id: 77,
            namespace: "ns".try_into().unwrap(),
            topic: topic.try_into().unwrap(),
            members,
            after,
            limit,
        },
    )
    .await;
    loop {
        match recv(ws).await {
            ServerMsg::PresenceState {
                request_id: 77,
                state,
            } => return Ok(state),
            ServerMsg::Error {
                request_id: 77,
                code,
                ..
            } => return Err(code),
            _ => {} // presence events of its subscriptions
        }
    }
}

/// Waits for a presence event matching `f`, skipping others.
async fn event(
    ws: &mut Ws,
    f: impl Fn(&fanfare_proto::PresenceEventMsg) -> bool,
) -> fanfare_proto::PresenceEventMsg {
    loop {
        if let ServerMsg::PresenceEvent { event, .. } = recv(ws).await {
            if f(&event) {
                return event;
            }
        }
    }
}

#[test]
fn members_join_are_listed_in_pages_and_leave_when_their_connection_closes() {
    let srv = server_with(|c| c.engine.occupancy_interval = Duration::from_millis(50));
    let addr = srv.local_addr();
    rt().block_on(async {
        let mut watcher = ws(addr).await;
        assert_eq!(
            join(&mut watcher, "room", opts(None, true, true)).await,
            Ok(0)
        );
        let mut bob = ws(addr).await;
        let bob_id = join(&mut bob, "room", opts(Some("bob"), false, false))
            .await
            .unwrap();
        let mut carol = ws(addr).await;
        let (carol_sub, carol_id) = join_sub(&mut carol, "room", opts(Some("carol"), false, false))
            .await
            .unwrap();
        assert!(bob_id != 0 && carol_id != 0 && bob_id != carol_id);

        // The watcher sees both joins, with who they are and their info.
        let mut joined = BTreeSet::new();
        while joined.len() < 2 {
            let e = event(&mut watcher, |e| e.action == PresenceAction::Join).await;
            let m = e.member.unwrap();
            assert_eq!(&m.info[..], b"{\"mood\":\"fine\"}");
            joined.insert((m.client_id, m.member_id));
        }
        assert_eq!(
            joined,
            BTreeSet::from([("bob".to_owned(), bob_id), ("carol".to_owned(), carol_id)])
        );
        // Occupancy counts every subscriber, listed or not.
        let e = event(&mut watcher, |e| {
            e.action == PresenceAction::Occupancy && e.occupancy == 3
        })
        .await;
        assert!(e.member.is_none());

        // Listing over WebSocket, one member per page.
        let mut q = ws(addr).await;
        let p1 = query(&mut q, "room", true, 0, 1).await.unwrap();
        assert_eq!(
            (p1.occupancy, p1.members_total, p1.members.len()),
            (3, 2, 1)
        );
        assert_ne!(p1.next_after, 0);
        let p2 = query(&mut q, "room", true, p1.next_after, 1).await.unwrap();
        assert_eq!(p2.members.len(), 1);
        assert_eq!(p2.next_after, 0, "the last page");
        let ids: BTreeSet<u64> = p1
            .members
            .iter()
            .chain(&p2.members)
            .map(|m| m.member_id)
            .collect();
        assert_eq!(ids, BTreeSet::from([bob_id, carol_id]));
        // Occupancy only: no members in the answer.
        let o = query(&mut q, "room", false, 0, 0).await.unwrap();
        assert_eq!((o.occupancy, o.members_total, o.members.len()), (3, 2, 0));
        // A topic nobody subscribes to is empty, not an error.
        let e = query(&mut q, "nobody", true, 0, 0).await.unwrap();
        assert_eq!((e.occupancy, e.members_total), (0, 0));

        // Over HTTP, as JSON.
        let (body, _) = curl(&[&format!(
            "http://{addr}/v1/topics/ns/room/presence?limit=10"
        )]);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["occupancy"], 3);
        assert_eq!(v["members"].as_array().unwrap().len(), 2);
        assert!(v["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["client_id"] == "bob"
                && m["member_id"].as_str() == Some(bob_id.to_string().as_str())));
        let (body, _) = curl(&[
            "-w",
            " %{http_code}",
            &format!("http://{addr}/v1/topics/ns/room/presence?limit=0"),
        ]);
        assert!(body.ends_with(" 400"), "{body}");
        let (body, _) = curl(&[
            "-w",
            " %{http_code}",
            "-X",
            "POST",
            &format!("http://{addr}/v1/topics/ns/room/presence"),
        ]);
        assert!(body.ends_with(" 405"), "{body}");

        // Bob's connection closes: he leaves at once, and the count drops.
        drop(bob);
        let e = event(&mut watcher, |e| e.action == PresenceAction::Leave).await;
        assert_eq!(e.member.unwrap().member_id, bob_id);
        event(&mut watcher, |e| {
            e.action == PresenceAction::Occupancy && e.occupancy == 2
        })
        .await;
        // Carol unsubscribes: she leaves too.
        send(
            &mut carol,
            ClientMsg::Unsubscribe {
                request_id: 3,
                subscription_id: carol_sub,
            },
        )
        .await;
        assert!(matches!(
            recv(&mut carol).await,
            ServerMsg::Unsubscribed { request_id: 3, .. }
        ));
        let e = event(&mut watcher, |e| e.action == PresenceAction::Leave).await;
        assert_eq!(e.member.unwrap().member_id, carol_id);
        eventually_async(
            "every member to leave",
            WAIT,
            tokio::time::sleep,
            async || {
                let s = query(&mut q, "room", true, 0, 0).await.unwrap();
                if (s.members_total, s.occupancy) == (0, 1) {
                    Ok(())
                } else {
                    Err(s)
                }
            },
        )
        .await;
    });
    let t = srv.broker().stats_total();
    assert_eq!(
        (t.presence_joins, t.presence_leaves, t.presence_members),
        (2, 2, 0)
    );
}

#[test]
fn member_limit_info_limit_and_event_rate_limit() {
    let srv = server_with(|c| {
        c.engine.presence_members_max = 2;
        c.engine.presence_info_bytes_max = 16;
        c.engine.presence_events_per_second = 2;
    });
    let addr = srv.local_addr();
    rt().block_on(async {
        let mut watcher = ws(addr).await;
        join(&mut watcher, "lim", opts(None, true, false))
            .await
            .unwrap();
        // Info over the limit: refused with a clear error, the connection stays.
        let mut big = ws(addr).await;
        let mut o = opts(Some("big"), false, false);
        o.info = Bytes::from(vec![b'x'; 17]);
        let (code, text) = join(&mut big, "lim", o).await.unwrap_err();
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(text.contains("over the limit of 16"), "{text}");
        assert!(join(&mut big, "lim", opts(Some("big"), false, false))
            .await
            .is_ok());
        // A second member fills the topic; the third is subscribed but refused a listing.
        let mut two = ws(addr).await;
        join(&mut two, "lim", opts(Some("two"), false, false))
            .await
            .unwrap();
        let mut three = ws(addr).await;
        let three_id = join(&mut three, "lim", opts(Some("three"), false, false))
            .await
            .unwrap();
        let e = event(&mut three, |e| e.action == PresenceAction::Refused).await;
        assert_eq!(e.member.unwrap().member_id, three_id);
        let s = query(&mut watcher, "lim", false, 0, 0).await.unwrap();
        assert_eq!((s.occupancy, s.members_total), (4, 2));
        // Events past 2 per second are counted and announced as one overflow.
        let mut more = Vec::new();
        for i in 0..4 {
            let mut c = ws(addr).await;
            join(&mut c, &format!("r{i}"), opts(None, false, false))
                .await
                .unwrap();
            more.push(c);
        }
        drop(big);
        drop(two);
        drop(three);
        let mut joins_leaves = 0;
        let skipped = loop {
            let e = event(&mut watcher, |_| true).await;
            match e.action {
                PresenceAction::Join | PresenceAction::Leave => joins_leaves += 1,
                PresenceAction::Overflow => break e.skipped,
                _ => {}
            }
        };
        assert!(
            joins_leaves <= 4 && skipped >= 1,
            "{joins_leaves} events, {skipped} skipped"
        );
    });
    let t = srv.broker().stats_total();
    assert_eq!(t.presence_refused, 1);
    assert!(t.presence_events_skipped >= 1);
}

fn token(k: &Key, sub: &str, rights: &[&str]) -> String {
    let now = unix_now();
    let c = Claims {
        sub: sub.into(),
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        jti: None,
        perms: vec![PermissionClaim {
            ns: "ns".into(),
            topic: "*".into(),
            rights: rights.iter().map(|r| (*r).to_owned()).collect(),
        }],
        admin: false,
    };
    mint(k, &c).unwrap()
}

#[test]
fn the_presence_right_guards_member_lists_and_events() {
    let k = Key::generate("hs1", Algorithm::HS256).unwrap();
    let srv = server_with(|c| c.auth.keys = vec![k.clone()]);
    let addr = srv.local_addr();
    let sub_only = token(&k, "sam", &["subscribe"]);
    let with_presence = token(&k, "pat", &["subscribe", "presence"]);
    rt().block_on(async {
        let connect = |t: String| async move {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws?token={t}"))
                .await
                .unwrap();
            ws
        };
        let mut sam = connect(sub_only.clone()).await;
        // Entering needs only subscribe; the member is the token's subject.
        let sam_id = join(&mut sam, "auth", opts(Some(""), false, true))
            .await
            .unwrap();
        // Another identity than the token's is refused.
        let (code, _) = join(&mut sam, "auth2", opts(Some("mallory"), false, false))
            .await
            .unwrap_err();
        assert_eq!(code, ErrorCode::Forbidden);
        // Join/leave events and member lists need the presence right; occupancy does not.
        let (code, _) = join(&mut sam, "auth3", opts(None, true, false))
            .await
            .unwrap_err();
        assert_eq!(code, ErrorCode::Forbidden);
        assert_eq!(
            query(&mut sam, "auth", true, 0, 0).await.unwrap_err(),
            ErrorCode::Forbidden
        );
        assert_eq!(
            query(&mut sam, "auth", false, 0, 0)
                .await
                .unwrap()
                .occupancy,
            1
        );

        let mut pat = connect(with_presence.clone()).await;
        let s = query(&mut pat, "auth", true, 0, 0).await.unwrap();
        assert_eq!(s.members.len(), 1);
        assert_eq!(
            (s.members[0].client_id.as_str(), s.members[0].member_id),
            ("sam", sam_id)
        );
        // The same rules over HTTP (curl blocks this thread; the server runs on its own).
        let url = format!("http://{addr}/v1/topics/ns/auth/presence");
        let (body, _) = curl(&[
            "-w",
            " %{http_code}",
            "-H",
            &format!("authorization: Bearer {sub_only}"),
            &url,
        ]);
        assert!(body.ends_with(" 403"), "{body}");
        let (body, _) = curl(&[
            "-w",
            " %{http_code}",
            "-H",
            &format!("authorization: Bearer {sub_only}"),
            &format!("{url}?members=0"),
        ]);
        assert!(
            body.ends_with(" 200") && body.contains("\"occupancy\":1"),
            "{body}"
        );
        let (body, _) = curl(&[
            "-w",
            " %{http_code}",
            "-H",
            &format!("authorization: Bearer {with_presence}"),
            &url,
        ]);
        assert!(
            body.ends_with(" 200") && body.contains("\"client_id\":\"sam\""),
            "{body}"
        );
    });
}

/// Reads an SSE stream until `want` shows up in it (or panics at the deadline).
fn sse_until(s: &mut std::net::TcpStream, got: &mut String, want: &str) {
    use std::io::Read as _;
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while !got.contains(want) {
        assert!(Instant::now() < deadline, "no {want:?} in {got}");
        if let Ok(n) = s.read(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[test]
fn an_sse_stream_enters_presence_and_gets_presence_events() {
    use std::io::Write as _;
    let srv = server_with(|c| c.engine.occupancy_interval = Duration::from_millis(50));
    let addr = srv.local_addr();
    let open = |query: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        write!(
            s,
            "GET /v1/topics/ns/sse-room?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        s
    };
    let mut watch = open("occupancy=1&presence_events=1");
    let mut seen = String::new();
    sse_until(&mut watch, &mut seen, "200 OK");
    // Events go to live subscriptions: an item through the stream shows it is live.
    let (body, _) = curl(&[
        "-XPOST",
        "--data-binary",
        "live",
        &format!("http://{addr}/v1/topics/ns/sse-room"),
    ]);
    assert!(body.contains("\"seq\":1"), "{body}");
    sse_until(&mut watch, &mut seen, "data: live");
    // Another stream enters as "eve" with an info blob.
    let mut eve = open("enter=1&client_id=eve&info=%7B%22x%22%3A1%7D");
    let mut eve_seen = String::new();
    sse_until(&mut eve, &mut eve_seen, "200 OK");
    sse_until(&mut watch, &mut seen, "\"action\":\"join\"");
    assert!(seen.contains("event: presence\ndata: "), "{seen}");
    assert!(seen.contains("\"client_id\":\"eve\""), "{seen}");
    sse_until(&mut watch, &mut seen, "\"occupancy\":2");
    let v: Value = {
        let (body, _) = curl(&[&format!("http://{addr}/v1/topics/ns/sse-room/presence")]);
        serde_json::from_str(&body).unwrap()
    };
    assert_eq!(v["members"][0]["info"], "eyJ4IjoxfQ==", "{v}"); // {"x":1}
                                                                // Eve's stream ends: she leaves.
    drop(eve);
    sse_until(&mut watch, &mut seen, "\"action\":\"leave\"");
}
