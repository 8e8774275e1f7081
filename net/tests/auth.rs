//! Access control over real sockets: tokens at the WebSocket upgrade, in Hello and by refresh;
//! every permission combination on WebSocket and HTTP; refused tokens of every kind; the
//! per-IP failure limit; expiry with grace; the Origin allow-list; the admin endpoints.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_net::auth::{mint, unix_now, Algorithm, Claims, Key, PermissionClaim};
use fanfare_net::{Server, ServerConfig};
use fanfare_proto::message::ErrorCode;
use fanfare_proto::{ClientMsg, ServerMsg, Start};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::*;

struct Keys {
    ed: Key,
    hs: Key,
}

fn keys() -> Keys {
    Keys {
        ed: Key::generate("ed1", Algorithm::EdDSA).unwrap(),
        hs: Key::generate("hs1", Algorithm::HS256).unwrap(),
    }
}

/// A server with both keys active (two shards unless `f` says otherwise).
fn auth_server(k: &Keys, f: impl FnOnce(&mut ServerConfig)) -> Server {
    server_with(|c| {
        c.auth.keys = vec![public_only(&k.ed), k.hs.clone()];
        c.auth.failure_delay = Duration::from_millis(100);
        c.auth.leeway = Duration::ZERO;
        f(c)
    })
}

/// The key as a router holds it: no private half.
fn public_only(k: &Key) -> Key {
    let mut k = k.clone();
    k.sign = None;
    k
}

fn claims(sub: &str, ttl: i64, perms: &[(&str, &str, &[&str])]) -> Claims {
    Claims {
        sub: sub.into(),
        exp: (unix_now() as i64 + ttl) as u64,
        nbf: None,
        iat: Some(unix_now()),
        jti: Some(format!("{sub}-{ttl}")),
        perms: perms
            .iter()
            .map(|(ns, topic, rights)| PermissionClaim {
                ns: (*ns).into(),
                topic: (*topic).into(),
                rights: rights.iter().map(|r| (*r).to_owned()).collect(),
            })
            .collect(),
        admin: false,
    }
}

fn token(k: &Key, sub: &str, perms: &[(&str, &str, &[&str])]) -> String {
    mint(k, &claims(sub, 3600, perms)).unwrap()
}

/// Connects with a token in the query string; the HTTP status when the upgrade is refused.
async fn ws_with(
    addr: SocketAddr,
    query_token: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, u16> {
    let url = match query_token {
        Some(t) => format!("ws://{addr}/v1/ws?token={t}"),
        None => format!("ws://{addr}/v1/ws"),
    };
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn publish_msg(ns: &str, topic: &str) -> ClientMsg {
    ClientMsg::Publish {
        request_id: 5,
        namespace: ns.try_into().unwrap(),
        topic: topic.try_into().unwrap(),
        payload: Bytes::from_static(b"hi"),
        idempotency_key: None,
    }
}

fn subscribe_msg(ns: &str, topic: &str) -> ClientMsg {
    ClientMsg::Subscribe {
        request_id: 6,
        namespace: ns.try_into().unwrap(),
        topic: topic.try_into().unwrap(),
        from: Start::Latest,
        presence: None,
    }
}

/// Waits for the close frame and returns its code.
async fn closed(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(c))) => return c.map(|c| c.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[test]
fn every_permission_combination_over_websocket() {
    let k = keys();
    let srv = auth_server(&k, |_| {});
    let rights: [&[&str]; 4] = [&[], &["publish"], &["subscribe"], &["publish", "subscribe"]];
    // (namespace pattern, topic pattern) and whether they cover chat/room-1.
    let scopes = [
        ("chat", "room-1", true),
        ("chat", "room-*", true),
        ("*", "*", true),
        ("ch*", "*", true),
        ("chat", "room-2", false),
        ("chat", "room-1x*", false),
        ("other", "*", false),
    ];
    rt().block_on(async {
        for r in rights {
            for (ns, topic, covers) in scopes {
                let t = token(&k.ed, "alice", &[(ns, topic, r)]);
                let mut c = ws_with(srv.local_addr(), Some(&t), None).await.unwrap();
                let can_pub = covers && r.contains(&"publish");
                let can_sub = covers && r.contains(&"subscribe");
                send(&mut c, subscribe_msg("chat", "room-1")).await;
                match recv(&mut c).await {
                    ServerMsg::Subscribed { request_id: 6, .. } => {
                        assert!(can_sub, "{r:?} {ns} {topic}")
                    }
                    ServerMsg::Error {
                        request_id: 6,
                        code,
                        ..
                    } => {
                        assert!(!can_sub, "{r:?} {ns} {topic}");
                        assert_eq!(code, ErrorCode::Forbidden);
                    }
                    other => panic!("{other:?}"),
                }
                send(&mut c, publish_msg("chat", "room-1")).await;
                loop {
                    match recv(&mut c).await {
                        ServerMsg::PublishAck { request_id: 5, .. } => {
                            assert!(can_pub, "{r:?} {ns} {topic}");
                            break;
                        }
                        ServerMsg::Error {
                            request_id: 5,
                            code,
                            ..
                        } => {
                            assert!(!can_pub, "{r:?} {ns} {topic}");
                            assert_eq!(code, ErrorCode::Forbidden);
                            break;
                        }
                        // Its own item, when it may both publish and subscribe.
                        ServerMsg::Item(i) => assert_eq!(i.publisher_id.as_deref(), Some("alice")),
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
    });
    assert!(srv.metrics().total("auth_forbidden") > 0);
}

#[test]
fn publisher_id_is_the_token_subject_on_every_transport() {
    let k = keys();
    let srv = auth_server(&k, |_| {});
    let reader = token(&k.hs, "reader", &[("chat", "*", &["subscribe"])]);
    let writer = token(&k.ed, "writer", &[("chat", "*", &["publish"])]);
    rt().block_on(async {
        let mut sub = ws_with(srv.local_addr(), Some(&reader), None).await.unwrap();
        send(&mut sub, subscribe_msg("chat", "lobby")).await;
        assert!(matches!(recv(&mut sub).await, ServerMsg::Subscribed { .. }));
        // HTTP publish with a bearer token.
        let addr = srv.local_addr();
        let w2 = writer.clone();
        let resp = tokio::task::spawn_blocking(move || {
            raw(
                addr,
                format!(
                    "POST /v1/topics/chat/lobby HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {w2}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
                )
                .as_bytes(),
                WAIT,
            )
        })
        .await
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        match recv(&mut sub).await {
            ServerMsg::Item(i) => assert_eq!(i.publisher_id.as_deref(), Some("writer")),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn http_requests_need_a_granting_token() {
    let k = keys();
    let srv = auth_server(&k, |_| {});
    let addr = srv.local_addr();
    let post = |auth: &str| {
        raw(
            addr,
            format!(
                "POST /v1/topics/chat/a HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\nConnection: close\r\n\r\nhi"
            )
            .as_bytes(),
            WAIT,
        )
    };
    let none = post("");
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(none.contains("WWW-Authenticate: Bearer"), "{none}");
    let sub_only = token(&k.ed, "a", &[("chat", "*", &["subscribe"])]);
    let r = post(&format!("Authorization: Bearer {sub_only}\r\n"));
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let pub_ok = token(&k.ed, "a", &[("chat", "a", &["publish"])]);
    let r = post(&format!("Authorization: Bearer {pub_ok}\r\n"));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // SSE with the token in the query string (EventSource cannot set headers).
    let get = |t: &str| {
        raw(
            addr,
            format!("GET /v1/topics/chat/a?token={t} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
            Duration::from_millis(500),
        )
    };
    let r = get(&sub_only);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("text/event-stream"), "{r}");
    let r = get(&pub_ok);
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = get("not-a-token");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // Health and metrics stay open for probes and scrapers.
    let r = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn refused_tokens_wrong_signature_algorithm_key_and_time() {
    let k = keys();
    let srv = auth_server(&k, |_| {});
    let perms: &[(&str, &str, &[&str])] = &[("*", "*", &["publish", "subscribe"])];
    // Signed by a different key that claims the same id.
    let impostor = Key::generate("ed1", Algorithm::EdDSA).unwrap();
    let wrong_sig = token(&impostor, "a", perms);
    // Key confusion: HS256 "signed" with the Ed25519 public key, naming the EdDSA key.
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("ed1".into());
    let confused = jsonwebtoken::encode(
        &h,
        &claims("a", 3600, perms),
        &jsonwebtoken::EncodingKey::from_secret(&k.ed.verify),
    )
    .unwrap();
    // alg none.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","kid":"ed1"}"#),
        b64.encode(serde_json::to_vec(&claims("a", 3600, perms)).unwrap())
    );
    let expired = mint(&k.ed, &claims("a", -60, perms)).unwrap();
    let mut early = claims("a", 3600, perms);
    early.nbf = Some(unix_now() + 600);
    let not_yet = mint(&k.ed, &early).unwrap();
    let unknown_kid = token(&Key::generate("ed9", Algorithm::EdDSA).unwrap(), "a", perms);
    let mut no_exp = serde_json::to_value(claims("a", 3600, perms)).unwrap();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut hh = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hh.kid = Some("hs1".into());
    let missing_exp = jsonwebtoken::encode(
        &hh,
        &no_exp,
        &jsonwebtoken::EncodingKey::from_secret(k.hs.sign.as_ref().unwrap()),
    )
    .unwrap();
    let good = token(&k.hs, "a", perms);
    rt().block_on(async {
        for (name, t) in [
            ("wrong signature", &wrong_sig),
            ("key confusion", &confused),
            ("alg none", &none),
            ("expired", &expired),
            ("not yet valid", &not_yet),
            ("unknown kid", &unknown_kid),
            ("missing exp", &missing_exp),
        ] {
            let t0 = Instant::now();
            let status = ws_with(srv.local_addr(), Some(t), None).await.err();
            assert_eq!(status, Some(401), "{name}");
            // Failures are answered after the configured delay.
            assert!(t0.elapsed() >= Duration::from_millis(100), "{name}");
        }
        assert!(ws_with(srv.local_addr(), Some(&good), None).await.is_ok());
    });
    assert!(srv.metrics().total("auth_failures_invalid") >= 5);
    assert!(srv.metrics().total("auth_failures_expired") >= 2);
}

#[test]
fn token_in_the_first_message_or_the_connection_closes() {
    let k = keys();
    let srv = auth_server(&k, |_| {});
    let t = token(&k.ed, "a", &[("chat", "*", &["subscribe"])]);
    rt().block_on(async {
        // No token at the upgrade: Hello carries it.
        let mut c = ws_with(srv.local_addr(), None, None).await.unwrap();
        send(
            &mut c,
            ClientMsg::Hello {
                version_min: 1,
                version_max: 1,
                token: Some(t.clone()),
            },
        )
        .await;
        assert!(matches!(recv(&mut c).await, ServerMsg::Welcome { .. }));
        send(&mut c, subscribe_msg("chat", "x")).await;
        assert!(matches!(recv(&mut c).await, ServerMsg::Subscribed { .. }));
        // No token at all: the first request is refused and the connection closed (1008).
        let mut c = ws_with(srv.local_addr(), None, None).await.unwrap();
        send(&mut c, subscribe_msg("chat", "x")).await;
        match recv(&mut c).await {
            ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthorized),
            other => panic!("{other:?}"),
        }
        assert_eq!(closed(&mut c).await, Some(CloseCode::Policy));
        // A bad token in Hello: error, then close.
        let mut c = ws_with(srv.local_addr(), None, None).await.unwrap();
        send(
            &mut c,
            ClientMsg::Hello {
                version_min: 1,
                version_max: 1,
                token: Some("x.y.z".into()),
            },
        )
        .await;
        match recv(&mut c).await {
            ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthorized),
            other => panic!("{other:?}"),
        }
        assert_eq!(closed(&mut c).await, Some(CloseCode::Policy));
    });
}

#[test]
fn silent_connections_must_authenticate_within_the_handshake_time() {
    let k = keys();
    let srv = auth_server(&k, |c| {
        c.limits.handshake_timeout = Duration::from_millis(300)
    });
    rt().block_on(async {
        let mut c = ws_with(srv.local_addr(), None, None).await.unwrap();
        match recv(&mut c).await {
            ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthorized),
            other => panic!("{other:?}"),
        }
        assert_eq!(closed(&mut c).await, Some(CloseCode::Policy));
    });
    assert_eq!(srv.metrics().total("auth_failures_timeout"), 1);
}

#[test]
fn failures_are_rate_limited_per_ip() {
    let k = keys();
    // One shard: the failure memory is per shard.
    let srv = auth_server(&k, |c| {
        c.engine.shards = 1;
        c.auth.failures_per_ip_max = 3;
        c.auth.failure_delay = Duration::from_millis(10);
    });
    let good = token(&k.ed, "a", &[("*", "*", &["subscribe"])]);
    rt().block_on(async {
        for _ in 0..3 {
            assert_eq!(
                ws_with(srv.local_addr(), Some("bad"), None).await.err(),
                Some(401)
            );
        }
        // Over budget: even a good token is refused, without being looked at.
        assert_eq!(
            ws_with(srv.local_addr(), Some(&good), None).await.err(),
            Some(429)
        );
    });
    let addr = srv.local_addr();
    let r = raw(
        addr,
        format!("GET /v1/topics/a/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\nConnection: close\r\n\r\n").as_bytes(),
        WAIT,
    );
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert_eq!(srv.metrics().total("auth_rate_limited"), 2);
    assert_eq!(srv.metrics().total("auth_failures_invalid"), 3);
}

#[test]
fn expiry_gives_a_grace_period_and_refresh_keeps_the_connection() {
    let k = keys();
    // One shard: one sweep checks both connections' token times, with one clock reading.
    let srv = auth_server(&k, |c| {
        c.engine.shards = 1;
        c.auth.expiry_grace = Duration::from_secs(2);
    });
    let perms: &[(&str, &str, &[&str])] = &[("chat", "*", &["publish", "subscribe"])];
    let short = mint(&k.ed, &claims("alice", 2, perms)).unwrap();
    // A second longer (minted after `short`): `dropped` expires, and its grace ends, after
    // `kept`'s would have (the server counts a token's time in whole seconds from when it
    // took it, so the same token on two connections may expire up to a second apart).
    let longer = mint(&k.ed, &claims("alice", 3, perms)).unwrap();
    rt().block_on(async {
        let mut kept = ws_with(srv.local_addr(), Some(&short), None).await.unwrap();
        let mut dropped = ws_with(srv.local_addr(), Some(&longer), None)
            .await
            .unwrap();
        for c in [&mut kept, &mut dropped] {
            send(c, subscribe_msg("chat", "a")).await;
            assert!(matches!(recv(c).await, ServerMsg::Subscribed { .. }));
            send(c, subscribe_msg("chat", "b")).await;
            assert!(matches!(recv(c).await, ServerMsg::Subscribed { .. }));
        }
        let told_expired = |m: ServerMsg| match m {
            ServerMsg::Error {
                request_id: 0,
                code,
                ..
            } => assert_eq!(code, ErrorCode::TokenExpired),
            other => panic!("{other:?}"),
        };
        told_expired(recv(&mut kept).await);
        // In the grace period requests are refused with TokenExpired, not closed.
        send(&mut kept, publish_msg("chat", "a")).await;
        match recv(&mut kept).await {
            ServerMsg::Error {
                request_id: 5,
                code,
                ..
            } => assert_eq!(code, ErrorCode::TokenExpired),
            other => panic!("{other:?}"),
        }
        // A token of another subject is refused.
        let bob = token(&k.ed, "bob", perms);
        send(
            &mut kept,
            ClientMsg::RefreshToken {
                request_id: 8,
                token: bob,
            },
        )
        .await;
        match recv(&mut kept).await {
            ServerMsg::Error {
                request_id: 8,
                code,
                ..
            } => assert_eq!(code, ErrorCode::Forbidden),
            other => panic!("{other:?}"),
        }
        // The refresh grants chat/a only: the subscription to chat/b ends.
        let fresh = token(&k.hs, "alice", &[("chat", "a", &["publish", "subscribe"])]);
        send(
            &mut kept,
            ClientMsg::RefreshToken {
                request_id: 9,
                token: fresh,
            },
        )
        .await;
        let mut saw_closed = false;
        loop {
            match recv(&mut kept).await {
                ServerMsg::SubscriptionClosed { code, .. } => {
                    assert_eq!(code, ErrorCode::Forbidden);
                    saw_closed = true;
                }
                ServerMsg::TokenRefreshed {
                    request_id: 9,
                    expires_at,
                } => {
                    assert!(expires_at > unix_now() + 3000);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(saw_closed);
        // The unrefreshed connection is told too, and closes after its grace period.
        told_expired(recv(&mut dropped).await);
        assert_eq!(closed(&mut dropped).await, Some(CloseCode::Policy));
        // The refreshed one still works past the end of its old grace period: the sweep that
        // closed `dropped` ran after it (`dropped`'s grace ends later) and checked `kept` too.
        send(&mut kept, publish_msg("chat", "a")).await;
        loop {
            match recv(&mut kept).await {
                ServerMsg::PublishAck { request_id: 5, .. } => break,
                ServerMsg::Item(_) => {}
                other => panic!("{other:?}"),
            }
        }
    });
    assert_eq!(srv.metrics().total("auth_expired_closed"), 1);
}

#[test]
fn origin_allow_list() {
    let srv = server_with(|c| c.auth.allowed_origins = vec!["https://good.example".into()]);
    rt().block_on(async {
        let addr = srv.local_addr();
        assert_eq!(
            ws_with(addr, None, Some("https://evil.example"))
                .await
                .err(),
            Some(403)
        );
        assert!(ws_with(addr, None, Some("https://good.example"))
            .await
            .is_ok());
        assert!(ws_with(addr, None, Some("HTTPS://GOOD.EXAMPLE"))
            .await
            .is_ok());
        // Non-browser clients send no Origin.
        assert!(ws_with(addr, None, None).await.is_ok());
    });
    assert_eq!(srv.metrics().total("origin_rejected"), 1);
    // Default with authentication off: pages on this machine (and the node's own origin)
    // only; a page on the web cannot drive the broker (docs/protocol.md, CORS).
    let open = server();
    rt().block_on(async {
        assert_eq!(
            ws_with(open.local_addr(), None, Some("https://evil.example"))
                .await
                .err(),
            Some(403)
        );
        assert!(
            ws_with(open.local_addr(), None, Some("http://localhost:3000"))
                .await
                .is_ok()
        );
    });
}

#[test]
fn admin_endpoints_list_topics_and_shards() {
    let k = keys();
    let srv = auth_server(&k, |_| {});
    let addr = srv.local_addr();
    for (i, topic) in ["alpha", "beta", "gamma"].iter().enumerate() {
        for _ in 0..=i {
            srv.broker()
                .publish_blocking("adm", topic, Bytes::from_static(b"x"))
                .unwrap();
        }
    }
    let sub = token(&k.ed, "s", &[("adm", "*", &["subscribe"])]);
    let mut admin_claims = claims("ops", 3600, &[]);
    admin_claims.admin = true;
    let admin = mint(&k.ed, &admin_claims).unwrap();
    rt().block_on(async {
        // Three subscribers of adm/beta on separate connections (spread over shards).
        let mut conns = Vec::new();
        for _ in 0..3 {
            let mut c = ws_with(addr, Some(&sub), None).await.unwrap();
            send(&mut c, subscribe_msg("adm", "beta")).await;
            assert!(matches!(recv(&mut c).await, ServerMsg::Subscribed { .. }));
            conns.push(c);
        }
        let get = |path: String, bearer: Option<String>| {
            tokio::task::spawn_blocking(move || {
                let auth = bearer
                    .map(|t| format!("Authorization: Bearer {t}\r\n"))
                    .unwrap_or_default();
                raw(
                    addr,
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
                        .as_bytes(),
                    WAIT,
                )
            })
        };
        let r = get("/v1/admin/topics".into(), None).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        let r = get("/v1/admin/topics".into(), Some(sub.clone()))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
        let r = get(
            "/v1/admin/topics?prefix=adm/&limit=2".into(),
            Some(admin.clone()),
        )
        .await
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["total"], 3);
        assert_eq!(body["truncated"], true);
        let topics = body["topics"].as_array().unwrap();
        assert_eq!(topics.len(), 2);
        assert_eq!(topics[0]["topic"], "alpha");
        assert_eq!(topics[0]["last_seq"], 1);
        assert_eq!(topics[1]["topic"], "beta");
        assert_eq!(topics[1]["last_seq"], 2);
        assert_eq!(topics[1]["history_messages"], 2);
        assert_eq!(topics[1]["subscribers"], 3);
        let r = get("/v1/admin/stats".into(), Some(admin.clone()))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["shards"].as_array().unwrap().len(), 2);
        assert_eq!(body["totals"]["engine_subscriptions"], 3);
        assert_eq!(body["totals"]["engine_topics"], 3);
        let r = get("/v1/admin/topics?limit=0".into(), Some(admin.clone()))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        drop(conns);
    });
}

#[test]
fn http2_requests_carry_bearer_tokens() {
    let k = keys();
    let srv = auth_server(&k, |_| {});
    let good = token(&k.ed, "h2", &[("chat", "*", &["publish", "subscribe"])]);
    rt().block_on(async {
        let tcp = tokio::net::TcpStream::connect(srv.local_addr())
            .await
            .unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let status = |path: &str, method: &str, bearer: Option<&str>| {
            let mut r = http::Request::builder()
                .method(method)
                .uri(format!("http://localhost{path}"));
            if let Some(t) = bearer {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            let req = r.body(()).unwrap();
            let send = send.clone();
            async move {
                let (resp, mut tx) = send
                    .ready()
                    .await
                    .unwrap()
                    .send_request(req, false)
                    .unwrap();
                tx.send_data(Bytes::from_static(b"x"), true).unwrap();
                tokio::time::timeout(WAIT, resp)
                    .await
                    .unwrap()
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(status("/v1/topics/chat/a", "POST", None).await, 401);
        assert_eq!(status("/v1/topics/chat/a", "POST", Some("junk")).await, 401);
        assert_eq!(status("/v1/topics/other/a", "POST", Some(&good)).await, 403);
        assert_eq!(status("/v1/topics/chat/a", "POST", Some(&good)).await, 200);
        assert_eq!(status("/v1/topics/chat/a", "GET", Some(&good)).await, 200);
        assert_eq!(status("/v1/admin/stats", "GET", Some(&good)).await, 403);
    });
}
