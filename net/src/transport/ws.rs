//! WebSocket sessions: flatbuffers `ClientMessage`s in, `ServerMessage`s out (docs/protocol.md).

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use fanfare_core::{
    PresenceOptions, PresenceQuery, PublishError, PublishMeta, Published, StartedPublish, TaskKind,
    TopicKey,
};
use fanfare_proto::message::{DecodeLimits, ErrorCode, PresenceOpts};
use fanfare_proto::ws::{self as wsp, close_code, Message};
use fanfare_proto::{negotiate_version, ClientMsg, ServerMsg};

use crate::access::authenticate;
use crate::auth::Right;
use crate::metrics;
use crate::session::encoder::{Encoder, WS};
use crate::session::Conn;

/// The subprotocol name a client may ask for; the server echoes it.
pub const SUBPROTOCOL: &str = "fanfare.v1";

/// At shutdown: answers every complete request still in `buf` with `ShuttingDown`.
pub(super) fn refuse_buffered(
    conn: &Conn,
    dec: &mut wsp::Decoder,
    buf: &mut BytesMut,
    dlim: &DecodeLimits,
) {
    while let Ok(Some(m)) = dec.decode(buf) {
        let Message::Binary(b) = m else { continue };
        let request_id = match ClientMsg::decode(&b, dlim) {
            Ok(
                ClientMsg::Publish { request_id, .. }
                | ClientMsg::Subscribe { request_id, .. }
                | ClientMsg::Unsubscribe { request_id, .. }
                | ClientMsg::RefreshToken { request_id, .. }
                | ClientMsg::PresenceQuery { request_id, .. },
            ) => request_id,
            Ok(_) => continue,
            Err(_) => ClientMsg::request_id_of(&b, dlim),
        };
        conn.send(&ServerMsg::Error {
            request_id,
            code: ErrorCode::ShuttingDown,
            text: "the server is shutting down".into(),
        });
    }
}

/// What the session does after a message.
pub(super) enum Step {
    /// Read the next one.
    Go,
    /// End the session.
    End,
    /// Wait for this first (`false` ends the session).
    Wait(std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>),
}

impl From<bool> for Step {
    fn from(go: bool) -> Self {
        if go {
            Step::Go
        } else {
            Step::End
        }
    }
}

/// Handles one message, read at `now` (the session reads the clock once per read, not per
/// message).
pub(super) fn on_message(
    conn: &Rc<Conn>,
    m: Message,
    dlim: &DecodeLimits,
    peer: IpAddr,
    now: Instant,
) -> Step {
    let ctx = &conn.ctx;
    let go = match m {
        Message::Binary(b) => match ClientMsg::decode(&b, dlim) {
            Ok(msg) => return on_client(conn, msg, peer, now),
            Err(e) => {
                let code = e.code();
                if code == ErrorCode::MessageTooLarge {
                    metrics::inc(&ctx.stats.limit_message_size);
                }
                conn.send(&ServerMsg::Error {
                    request_id: ClientMsg::request_id_of(&b, dlim),
                    code,
                    text: e.to_string(),
                });
                if code == ErrorCode::BadRequest {
                    // Not a message we can read: the peer does not speak the protocol.
                    metrics::inc(&ctx.stats.protocol_errors);
                    conn.close_because(close_code::POLICY, "malformed message");
                    return Step::End;
                }
                true
            }
        },
        Message::Text(_) => {
            metrics::inc(&ctx.stats.protocol_errors);
            conn.close_because(
                close_code::UNSUPPORTED,
                "text frames are not part of the protocol",
            );
            false
        }
        Message::Ping(p) => {
            conn.push(wsp::encode_server_frame(wsp::Opcode::Pong, &p));
            true
        }
        Message::Pong(_) => {
            conn.ping_sent.set(None);
            true
        }
        Message::Close(c) => {
            let code = c.map_or(close_code::NORMAL, |(code, _)| code);
            conn.close_with(WS.goodbye(code, ""));
            false
        }
    };
    go.into()
}

/// Refuses a request the token does not cover; `false` (close) when the connection has no
/// token at all.
fn refuse(conn: &Conn, request_id: u64, code: ErrorCode, text: String) -> bool {
    conn.send(&ServerMsg::Error {
        request_id,
        code,
        text,
    });
    if code == ErrorCode::Unauthorized {
        conn.close_because(close_code::POLICY, "unauthorized");
        return false;
    }
    true
}

fn on_client(conn: &Rc<Conn>, msg: ClientMsg, peer: IpAddr, now: Instant) -> Step {
    let ctx = &conn.ctx;
    match msg {
        ClientMsg::Hello {
            version_min,
            version_max,
            token,
        } => match negotiate_version(version_min, version_max) {
            // With authentication on, a token in Hello is adopted like a refresh; without
            // one, the connection must already hold one from its upgrade.
            Some(version) if ctx.auth_on() && (token.is_some() || conn.grant().is_none()) => {
                let conn = conn.clone();
                return Step::Wait(Box::pin(async move {
                    match adopt_token(&conn, token.as_deref(), peer).await {
                        Ok(_) => {
                            welcome(&conn, version);
                            true
                        }
                        Err((code, text)) => {
                            conn.send(&ServerMsg::Error {
                                request_id: 0,
                                code,
                                text,
                            });
                            conn.close_because(close_code::POLICY, "unauthorized");
                            false
                        }
                    }
                }));
            }
            Some(version) => welcome(conn, version),
            None => {
                conn.send(&ServerMsg::Error {
                    request_id: 0,
                    code: ErrorCode::UnsupportedVersion,
                    text: format!(
                        "no common protocol version: client {version_min}..={version_max}, server {}..={}",
                        fanfare_proto::PROTOCOL_VERSION_MIN,
                        fanfare_proto::PROTOCOL_VERSION
                    ),
                });
                conn.close_because(close_code::PROTOCOL, "unsupported protocol version");
                return Step::End;
            }
        },
        ClientMsg::Publish {
            request_id,
            namespace,
            topic,
            payload,
            idempotency_key,
        } => {
            let publisher = match conn.permit(&namespace, &topic, Right::Publish) {
                Ok(p) => p,
                Err((code, text)) => return refuse(conn, request_id, code, text).into(),
            };
            // The reader waited for a free slot before reading this request.
            conn.take_publish_slot();
            let key = ctx.shard.key_of(&namespace, &topic);
            let meta = PublishMeta {
                publisher,
                idempotency_key: idempotency_key.map(Arc::from),
            };
            // The local path answers at once, a publish to another shard of this node or
            // waiting for the disk from the shard's loop: no task, no channel. Only a publish
            // to another node waits in a task for its owner's answer.
            match ctx.shard.start_publish_at(key, payload, meta, now) {
                Ok(StartedPublish::Pending(pending)) => {
                    let conn = conn.clone();
                    let answer = async move {
                        let r = pending.answer().await;
                        answer_publish(&conn, request_id, r);
                    };
                    ctx.shard.tasks().spawn(TaskKind::Request, answer).detach();
                }
                Ok(StartedPublish::Done(p)) => answer_publish(conn, request_id, Ok(p)),
                Ok(StartedPublish::Later(later)) => {
                    // Answered from the shard's log completion or the owning shard's reply,
                    // straight into the connection.
                    let conn = conn.clone();
                    ctx.shard.when_answered(
                        later,
                        Box::new(move |r| answer_publish(&conn, request_id, r)),
                    );
                }
                Err(e) => answer_publish(conn, request_id, Err(e)),
            }
        }
        ClientMsg::Subscribe {
            request_id,
            namespace,
            topic,
            from,
            presence,
        } => {
            let subject = match conn.permit(&namespace, &topic, Right::Subscribe) {
                Ok(s) => s,
                Err((code, text)) => return refuse(conn, request_id, code, text).into(),
            };
            let presence = match presence_options(conn, &namespace, &topic, subject, presence) {
                Ok(p) => p,
                Err((code, text)) => return refuse(conn, request_id, code, text).into(),
            };
            let max = ctx.limits.subscriptions_per_connection_max;
            let key = ctx.shard.key_of(&namespace, &topic);
            let refuse = if conn.has_topic(&key) {
                Some((
                    ErrorCode::AlreadySubscribed,
                    format!("already subscribed to {key}"),
                ))
            } else if conn.subscription_count() >= max {
                metrics::inc(&ctx.stats.limit_subscriptions);
                Some((
                    ErrorCode::TooManySubscriptions,
                    format!("subscription limit of {max} per connection reached"),
                ))
            } else {
                None
            };
            if let Some((code, text)) = refuse {
                conn.send(&ServerMsg::Error {
                    request_id,
                    code,
                    text,
                });
            } else if let Err(e) = conn.subscribe(request_id, key, from, presence) {
                conn.send(&ServerMsg::Error {
                    request_id,
                    code: e.code(),
                    text: e.to_string(),
                });
            }
        }
        ClientMsg::Unsubscribe {
            request_id,
            subscription_id,
        } => match conn.wire_to_sub(subscription_id) {
            Some(sub) => {
                ctx.shard.unsubscribe(sub);
                conn.remove_sub(sub);
                conn.send(&ServerMsg::Unsubscribed {
                    request_id,
                    subscription_id,
                });
            }
            None => conn.send(&ServerMsg::Error {
                request_id,
                code: ErrorCode::UnknownSubscription,
                text: format!("no subscription {subscription_id} on this connection"),
            }),
        },
        ClientMsg::PresenceQuery {
            request_id,
            namespace,
            topic,
            members,
            after,
            limit,
        } => {
            let right = if members {
                Right::Presence
            } else {
                Right::Subscribe
            };
            if let Err((code, text)) = conn.permit(&namespace, &topic, right) {
                return refuse(conn, request_id, code, text).into();
            }
            conn.take_publish_slot();
            let q = PresenceQuery {
                members,
                after,
                limit: match limit {
                    0 => crate::presence::PAGE_DEFAULT,
                    n => n as usize,
                },
            };
            let fut = ctx
                .shard
                .presence(TopicKey::from_names(&namespace, &topic), q);
            let conn = conn.clone();
            // Answered in a task (another shard or node may own the topic); it holds a
            // publish slot, so queries in flight share the publish window's limit.
            let tasks = ctx.shard.tasks();
            tasks
                .spawn(TaskKind::Request, async move {
                    let r = fut.await;
                    conn.publish_done();
                    metrics::inc(&conn.ctx.stats.presence_queries);
                    conn.send(&match r {
                        Ok(state) => ServerMsg::PresenceState {
                            request_id,
                            state: crate::presence::state_msg(&state),
                        },
                        Err(e) => ServerMsg::Error {
                            request_id,
                            code: e.code(),
                            text: e.to_string(),
                        },
                    });
                })
                .detach();
        }
        ClientMsg::Ping { nonce } => conn.send(&ServerMsg::Pong { nonce }),
        ClientMsg::RefreshToken { request_id, token } => {
            let conn = conn.clone();
            return Step::Wait(Box::pin(async move {
                refresh(&conn, request_id, &token, peer).await;
                true
            }));
        }
        _ => {}
    }
    Step::Go
}

/// Frees the publish's slot and queues its answer.
fn answer_publish(conn: &Conn, request_id: u64, r: Result<Published, PublishError>) {
    conn.publish_done();
    let reply = match r {
        Ok(p) => {
            metrics::inc(&conn.ctx.stats.publishes);
            ServerMsg::PublishAck {
                request_id,
                epoch: p.epoch.0,
                seq: p.seq.0,
                durability: p.durability,
            }
        }
        Err(e) => ServerMsg::Error {
            request_id,
            code: e.code(),
            text: e.to_string(),
        },
    };
    conn.send(&reply);
}

/// Answers `Hello` with `Welcome` in the negotiated `version`.
fn welcome(conn: &Conn, version: u16) {
    let cfg = conn.ctx.shard.config();
    conn.send(&ServerMsg::Welcome {
        version,
        heartbeat_interval_ms: cfg.heartbeat_interval.as_millis().min(u128::from(u32::MAX)) as u32,
        max_message_bytes: cfg.message_bytes_max.min(u32::MAX as usize) as u32,
    });
}

/// Answers `RefreshToken`: `TokenRefreshed`, or an error that leaves the old token in force
/// until it expires.
async fn refresh(conn: &Rc<Conn>, request_id: u64, token: &str, peer: IpAddr) {
    if !conn.ctx.auth_on() {
        conn.send(&ServerMsg::TokenRefreshed {
            request_id,
            expires_at: 0,
        });
        return;
    }
    match adopt_token(conn, Some(token), peer).await {
        Ok(expires_at) => conn.send(&ServerMsg::TokenRefreshed {
            request_id,
            expires_at,
        }),
        Err((code, text)) => conn.send(&ServerMsg::Error {
            request_id,
            code,
            text,
        }),
    }
}

/// Verifies `token` and puts it in force on the connection (Hello or refresh). A connection
/// that already holds a token keeps its subject: a token naming another one is refused.
/// Subscriptions the new token does not grant end with `SubscriptionClosed` (Forbidden).
/// Returns the new expiry (Unix seconds).
async fn adopt_token(
    conn: &Rc<Conn>,
    token: Option<&str>,
    peer: IpAddr,
) -> Result<u64, (ErrorCode, String)> {
    let ctx = &conn.ctx;
    let g = authenticate(ctx, peer, token)
        .await
        .map_err(|d| (d.code(), d.text()))?;
    if let Some(old) = conn.grant() {
        if old.subject != g.subject {
            metrics::inc(&ctx.stats.auth_forbidden);
            return Err((
                ErrorCode::Forbidden,
                format!(
                    "a new token must name the same subject ({}), not {}",
                    old.subject, g.subject
                ),
            ));
        }
    }
    let expires_at = g.expires_at;
    conn.set_grant(g);
    for (sub, wire) in conn.subs_not_granted() {
        ctx.shard.unsubscribe(sub);
        conn.remove_sub(sub);
        metrics::inc(&ctx.stats.auth_forbidden);
        conn.send(&ServerMsg::SubscriptionClosed {
            subscription_id: wire,
            code: ErrorCode::Forbidden,
            text: "the new token does not grant this subscription".into(),
        });
    }
    Ok(expires_at)
}

/// The engine's options for a subscribe's presence options, checked against the connection's
/// token: member events need the presence right; with authentication on the member is listed
/// as the token's subject (a different `client_id` is refused).
fn presence_options(
    conn: &Conn,
    ns: &str,
    topic: &str,
    subject: Option<Arc<str>>,
    o: Option<PresenceOpts>,
) -> Result<PresenceOptions, (ErrorCode, String)> {
    let Some(o) = o else {
        return Ok(PresenceOptions::default());
    };
    if o.member_events {
        conn.permit(ns, topic, Right::Presence)?;
    }
    let enter = if o.enter {
        let who: Arc<str> = match (subject, o.client_id) {
            (Some(sub), Some(c)) if *sub != *c => {
                return Err((
                    ErrorCode::Forbidden,
                    format!("client_id {c:?} is not the token's subject {sub:?}"),
                ))
            }
            (Some(sub), _) => sub,
            (None, Some(c)) if !c.is_empty() => Arc::from(c),
            (None, _) => Arc::from(crate::presence::ANONYMOUS),
        };
        Some((who, o.info))
    } else {
        None
    };
    Ok(PresenceOptions {
        enter,
        member_events: o.member_events,
        occupancy_events: o.occupancy_events,
    })
}
