//! WebSocket sessions: flatbuffers `ClientMessage`s in, `ServerMessage`s out (docs/protocol.md).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use fanfare_proto::message::{DecodeLimits, ErrorCode};
use fanfare_proto::ws::{self as wsp, close_code, Message, Role, Upgrade};
use fanfare_proto::{negotiate_version, ClientMsg, ServerMsg};
use futures_lite::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::conn::{self, goodbye, read_some, unless, Conn, Io, Mode, NetCtx, READ_CHUNK_BYTES};
use crate::metrics;

/// The subprotocol name a client may ask for; the server echoes it.
pub const SUBPROTOCOL: &str = "fanfare.v1";

pub(crate) async fn session<S: Io>(
    ctx: Rc<NetCtx>,
    mut r: ReadHalf<S>,
    mut w: WriteHalf<S>,
    mut buf: BytesMut,
    mut chunk: Vec<u8>,
    up: Upgrade,
    mut stop: Pin<Box<dyn Future<Output = ()>>>,
) {
    let proto = up
        .protocols
        .iter()
        .any(|p| p == SUBPROTOCOL)
        .then_some(SUBPROTOCOL);
    if w.write_all(wsp::accept_response(&up.key, proto).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let conn = Conn::new(ctx.clone(), Mode::Ws);
    let writer = glommio::spawn_local(conn::writer(conn.clone(), w, false));
    let limits = ctx.limits.clone();
    let mut dec = wsp::Decoder::new(
        Role::Server,
        wsp::Limits {
            frame_bytes_max: limits.frame_bytes_max,
            message_bytes_max: limits.frame_bytes_max,
        },
    );
    let cfg = ctx.shard.config();
    let dlim = DecodeLimits {
        payload_bytes_max: cfg.message_bytes_max,
        name_bytes_max: cfg.name_bytes_max,
        batch_items_max: 1,
    };
    chunk.resize(READ_CHUNK_BYTES, 0);
    'session: loop {
        loop {
            // Backpressure: take no more requests while their answers are not being read.
            if unless(&mut stop, conn.wait_for_room()).await.is_none() {
                conn.close_with(goodbye(
                    Mode::Ws,
                    close_code::GOING_AWAY,
                    "server shutting down",
                ));
                break 'session;
            }
            if conn.is_closing() {
                break 'session;
            }
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    let now = Instant::now();
                    conn.last_alive.set(now);
                    if !matches!(m, Message::Pong(_)) {
                        conn.last_input.set(now);
                    }
                    if !on_message(&conn, m, &dlim).await {
                        break 'session;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    metrics::inc(&ctx.stats.protocol_errors);
                    if e.close_code() == close_code::TOO_BIG {
                        metrics::inc(&ctx.stats.limit_message_size);
                    }
                    conn.close_with(goodbye(Mode::Ws, e.close_code(), &e.to_string()));
                    break 'session;
                }
            }
        }
        if conn.is_closing() {
            break;
        }
        // No timer here: the shard's keepalive sweep closes idle or dead connections and
        // the close signal wakes this read.
        let read = unless(&mut stop, async {
            futures_lite::future::or(
                async { Some(read_some(&mut r, &mut buf, &mut chunk, &ctx.stats).await) },
                async {
                    conn.closing_signal().await;
                    None
                },
            )
            .await
        })
        .await;
        match read {
            None => {
                conn.close_with(goodbye(
                    Mode::Ws,
                    close_code::GOING_AWAY,
                    "server shutting down",
                ));
                break;
            }
            Some(None) => break,
            Some(Some(Ok(0)) | Some(Err(_))) => {
                conn.close_with(bytes::Bytes::new());
                break;
            }
            Some(Some(Ok(_))) => {}
        }
    }
    conn.unsubscribe_all();
    // The writer sends what is queued and the close frame; a stuck socket ends at the
    // write timeout, and shutdown does not wait longer than its drain time.
    let drain = cfg.drain_timeout;
    futures_lite::future::or(writer, async move {
        glommio::timer::sleep(drain).await;
    })
    .await;
}

/// Handles one message; `false` ends the session.
async fn on_message(conn: &Rc<Conn>, m: Message, dlim: &DecodeLimits) -> bool {
    let ctx = &conn.ctx;
    match m {
        Message::Binary(b) => match ClientMsg::decode(&b, dlim) {
            Ok(msg) => on_client(conn, msg).await,
            Err(e) => {
                let code = e.code();
                if code == ErrorCode::MessageTooLarge {
                    metrics::inc(&ctx.stats.limit_message_size);
                }
                conn.send(&ServerMsg::Error {
                    request_id: 0,
                    code,
                    text: e.to_string(),
                });
                if code == ErrorCode::BadRequest {
                    // Not a message we can read: the peer does not speak the protocol.
                    metrics::inc(&ctx.stats.protocol_errors);
                    conn.close_with(goodbye(Mode::Ws, close_code::POLICY, "malformed message"));
                    return false;
                }
                true
            }
        },
        Message::Text(_) => {
            metrics::inc(&ctx.stats.protocol_errors);
            conn.close_with(goodbye(
                Mode::Ws,
                close_code::UNSUPPORTED,
                "text frames are not part of the protocol",
            ));
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
            conn.close_with(goodbye(Mode::Ws, code, ""));
            false
        }
    }
}

async fn on_client(conn: &Rc<Conn>, msg: ClientMsg) -> bool {
    let ctx = &conn.ctx;
    match msg {
        ClientMsg::Hello {
            version_min,
            version_max,
            ..
        } => match negotiate_version(version_min, version_max) {
            Some(version) => conn.send(&ServerMsg::Welcome {
                version,
                heartbeat_interval_ms: ctx
                    .shard
                    .config()
                    .heartbeat_interval
                    .as_millis()
                    .min(u128::from(u32::MAX)) as u32,
                max_message_bytes: ctx.shard.config().message_bytes_max.min(u32::MAX as usize)
                    as u32,
            }),
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
                conn.close_with(goodbye(
                    Mode::Ws,
                    close_code::PROTOCOL,
                    "unsupported protocol version",
                ));
                return false;
            }
        },
        ClientMsg::Publish {
            request_id,
            namespace,
            topic,
            payload,
            ..
        } => {
            conn.publish_slot().await;
            let fut = ctx.shard.publish(&namespace, &topic, payload, None);
            let conn = conn.clone();
            glommio::spawn_local(async move {
                let r = fut.await;
                conn.publish_done();
                let reply = match r {
                    Ok(p) => {
                        metrics::inc(&conn.ctx.stats.publishes);
                        ServerMsg::PublishAck {
                            request_id,
                            epoch: p.epoch.0,
                            seq: p.seq.0,
                        }
                    }
                    Err(e) => ServerMsg::Error {
                        request_id,
                        code: e.code(),
                        text: e.to_string(),
                    },
                };
                conn.send(&reply);
            })
            .detach();
        }
        ClientMsg::Subscribe {
            request_id,
            namespace,
            topic,
            from,
        } => {
            let max = ctx.limits.subscriptions_per_connection_max;
            let key = format!("{namespace}/{topic}");
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
            } else if let Err(e) = conn.subscribe(request_id, &namespace, &topic, from) {
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
        ClientMsg::Ping { nonce } => conn.send(&ServerMsg::Pong { nonce }),
        // Authentication is off in this build: a token refresh changes nothing.
        ClientMsg::RefreshToken { .. } => {}
        _ => {}
    }
    true
}
