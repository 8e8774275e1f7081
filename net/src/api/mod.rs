//! The HTTP API, one route table for HTTP/1.1 and HTTP/2:
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/topics/{ns}/{topic}` | publishes the body; `200 {"epoch":E,"seq":S,"durability":D}` |
//! | `GET /v1/topics/{ns}/{topic}/presence` | `200 {"occupancy":N,"members_total":M,"members":[...],"next_after":"ID"}` (see `presence.rs`) |
//! | `GET /v1/topics/{ns}/{topic}` | streams the subscription: SSE with `Accept: text/event-stream`, else length-prefixed `ServerMessage` frames (`application/x-fanfare-frames`) |
//! | `GET /v1/admin/...` | the admin API ([`admin`]) |
//! | `GET /`, `GET /console/...` | the live console (page and script, [`console`]) |
//! | `GET /healthz` | `200 ok` |
//! | `GET /metrics` | Prometheus text |
//!
//! A stream may ask for presence: `enter=1` (with `client_id=` and `info=` when
//! authentication is off), `occupancy=1`, `presence_events=1` (see [`stream_presence`]).
//! A stream starts at `from=latest` (default), `from=last:N` or `from=<epoch>-<seq>` (the next
//! sequence wanted); an SSE `Last-Event-ID: <epoch>-<seq>` (the last event seen) wins over
//! `from` and resumes at `seq + 1`. Errors: 400 (bad name, bad `from`), 401/403 (token), 404,
//! 405, 413 (body over the message limit), 429 (topic limit, failures from the address), 503
//! (shutting down, no owner).
//!
//! Every request takes the same steps whatever its HTTP version: the route table
//! ([`fanfare_proto::http::route`]), then
//! authenticate and authorize (topic and admin routes only), then check the names and the
//! start position ([`prepare`]). The transport then reads a publish's body and calls
//! [`publish`], or opens a stream with [`open_stream`] and pumps it.

pub(crate) mod admin;
pub(crate) mod console;
pub(crate) mod reply;

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use fanfare_core::{PresenceOptions, PublishMeta, Start, TopicKey};
use fanfare_proto::http::{percent_decode, query_param, route, start_from, Route};
use fanfare_proto::message::{CLIENT_ID_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX};

use crate::access::{authenticate, permits};
use crate::auth::{Grant, Right};
use crate::ctx::NetCtx;
use crate::metrics;
use crate::session::encoder::{FRAMES, SSE};
use crate::session::{Conn, Encoder};
use reply::{publish_status, status_of, subscribe_status, Reply};

/// A request head as both HTTP versions see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub accept_sse: bool,
    pub last_event_id: Option<&'a str>,
    /// `Idempotency-Key`, as sent.
    pub idempotency_key: Option<&'a str>,
    /// `Origin`, as sent (a browser page's).
    pub origin: Option<&'a str>,
    /// `Host` (`:authority` over HTTP/2).
    pub host: Option<&'a str>,
}

/// What the transport does with a request.
pub(crate) enum Action {
    /// Answer and be done.
    Reply(Reply),
    /// Read the body (at most the engine's `message_bytes_max`), then [`publish`] it.
    Publish { key: TopicKey, meta: PublishMeta },
    /// Open the stream with [`open_stream`] and pump it.
    Stream(StreamReq),
}

/// A checked subscription stream request.
pub(crate) struct StreamReq {
    pub key: TopicKey,
    pub start: Start,
    pub enc: &'static dyn Encoder,
    pub grant: Option<Arc<Grant>>,
    pub presence: PresenceOptions,
}

impl From<Reply> for Action {
    fn from(r: Reply) -> Self {
        Action::Reply(r)
    }
}

/// Routes, authenticates and checks a request. A browser page whose origin is not allowed is
/// refused (403) before anything else happens, preflight or not; an allowed one gets the CORS
/// headers on every answer.
pub(crate) async fn prepare(ctx: &Rc<NetCtx>, req: &Request<'_>, peer: IpAddr) -> Action {
    if !ctx.auth.origin_allowed(req.origin, req.host) {
        metrics::inc(&ctx.stats.origin_rejected);
        return Reply::error(403, "origin not allowed").into();
    }
    let mut action = route_request(ctx, req, peer).await;
    if let (Some(origin), Action::Reply(rep)) = (req.origin, &mut action) {
        if rep.status != 204 {
            rep.headers.extend(reply::cors_headers(origin));
        }
    }
    action
}

async fn route_request(ctx: &Rc<NetCtx>, req: &Request<'_>, peer: IpAddr) -> Action {
    match route(req.method, req.path) {
        Route::Preflight => match req.origin {
            Some(origin) => reply::preflight(origin).into(),
            None => Reply::text(405, Bytes::from_static(b"method not allowed")).into(),
        },
        Route::Healthz => Reply::text(200, Bytes::from_static(b"ok")).into(),
        Route::Console(path) => console::serve(path).into(),
        Route::Metrics => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: ctx.registry.render().into(),
            headers: Vec::new(),
        }
        .into(),
        Route::Admin(path) => match grant(ctx, peer, req).await {
            Ok(g) => {
                let (status, body) = admin::serve(ctx, path, req.query, g.as_deref()).await;
                Reply::json(status, body).into()
            }
            Err(refused) => refused.into(),
        },
        Route::Publish { ns, topic } => {
            let grant = match authorize(ctx, peer, req, ns, topic, Right::Publish).await {
                Ok(g) => g,
                Err(refused) => return refused.into(),
            };
            let key = match ctx.shard.topic_key(ns, topic) {
                Ok(key) => key,
                Err(e) => return Reply::error(subscribe_status(&e), &e.to_string()).into(),
            };
            let idempotency_key = match req.idempotency_key {
                Some(k) if k.is_empty() || k.len() > IDEMPOTENCY_KEY_BYTES_MAX => {
                    let why =
                        format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes");
                    return Reply::error(400, &why).into();
                }
                k => k.map(Arc::from),
            };
            Action::Publish {
                key,
                meta: PublishMeta {
                    publisher: grant.map(|g| g.subject.clone()),
                    idempotency_key,
                },
            }
        }
        Route::Stream { ns, topic } => {
            let grant = match authorize(ctx, peer, req, ns, topic, Right::Subscribe).await {
                Ok(g) => g,
                Err(refused) => return refused.into(),
            };
            let start = match start_from(req.last_event_id, req.query) {
                Ok(s) => s,
                Err(why) => return Reply::error(400, &why).into(),
            };
            let key = match ctx.shard.topic_key(ns, topic) {
                Ok(k) => k,
                Err(e) => return Reply::error(subscribe_status(&e), &e.to_string()).into(),
            };
            let presence = match stream_presence(ctx, req, grant.as_deref(), ns, topic) {
                Ok(p) => p,
                Err(refused) => return refused.into(),
            };
            let enc: &'static dyn Encoder = if req.accept_sse { &SSE } else { &FRAMES };
            Action::Stream(StreamReq {
                key,
                start,
                enc,
                grant,
                presence,
            })
        }
        Route::Presence { ns, topic } => presence(ctx, req, peer, ns, topic).await,
        Route::MethodNotAllowed => {
            Reply::text(405, Bytes::from_static(b"method not allowed")).into()
        }
        Route::NotFound => Reply::text(404, Bytes::from_static(b"not found")).into(),
    }
}

/// A stream's presence options from its query: `enter=1` (listed as the token's subject, or
/// with authentication off as `client_id=`), `info=` (percent-encoded), `occupancy=1`
/// (occupancy events), `presence_events=1` (join/leave events: the presence right).
fn stream_presence(
    ctx: &NetCtx,
    req: &Request<'_>,
    grant: Option<&Grant>,
    ns: &str,
    topic: &str,
) -> Result<PresenceOptions, Reply> {
    let on = |name: &str| matches!(query_param(req.query, name), Some("1" | "true"));
    let member_events = on("presence_events");
    if member_events {
        permits(ctx, grant, ns, topic, Right::Presence)
            .map_err(|(code, why)| Reply::error(status_of(code), &why))?;
    }
    let enter = if on("enter") {
        let who: Arc<str> = match (grant, query_param(req.query, "client_id")) {
            (Some(g), _) => g.subject.clone(),
            (None, Some(c)) if !c.is_empty() => {
                let c = percent_decode(c);
                if c.len() > CLIENT_ID_BYTES_MAX {
                    let why = format!("client_id must be at most {CLIENT_ID_BYTES_MAX} bytes");
                    return Err(Reply::error(400, &why));
                }
                Arc::from(c)
            }
            (None, _) => Arc::from(crate::presence::ANONYMOUS),
        };
        let info = query_param(req.query, "info")
            .map(percent_decode)
            .unwrap_or_default();
        Some((who, Bytes::from(info)))
    } else {
        None
    };
    Ok(PresenceOptions {
        enter,
        member_events,
        occupancy_events: on("occupancy"),
    })
}

/// `GET /v1/topics/{ns}/{topic}/presence[?members=0|1&after=ID&limit=N]`: the topic's
/// occupancy and a page of members (members need the presence right; `members=0` asks for
/// the occupancy only, which the subscribe right grants).
async fn presence(
    ctx: &Rc<NetCtx>,
    req: &Request<'_>,
    peer: IpAddr,
    ns: &str,
    topic: &str,
) -> Action {
    let members = query_param(req.query, "members") != Some("0");
    let right = if members {
        Right::Presence
    } else {
        Right::Subscribe
    };
    if let Err(refused) = authorize(ctx, peer, req, ns, topic, right).await {
        return refused.into();
    }
    let num = |name: &str| -> Result<Option<u64>, Reply> {
        query_param(req.query, name)
            .map(|v| v.parse::<u64>())
            .transpose()
            .map_err(|_| Reply::error(400, &format!("{name} must be a decimal number")))
    };
    let (after, limit) = match (num("after"), num("limit")) {
        (Ok(a), Ok(l)) => (a.unwrap_or(0), l),
        (Err(r), _) | (_, Err(r)) => return r.into(),
    };
    let max = ctx.shard.config().presence_page_max;
    let limit = match limit {
        None => crate::presence::PAGE_DEFAULT.min(max),
        Some(l) if (1..=max as u64).contains(&l) => l as usize,
        Some(_) => return Reply::error(400, &format!("limit must be 1 to {max}")).into(),
    };
    let key = match ctx.shard.topic_key(ns, topic) {
        Ok(k) => k,
        Err(e) => return Reply::error(subscribe_status(&e), &e.to_string()).into(),
    };
    metrics::inc(&ctx.stats.presence_queries);
    let q = fanfare_core::PresenceQuery {
        members,
        after,
        limit,
    };
    match ctx.shard.presence(key, q).await {
        Ok(state) => Reply::json(200, crate::presence::state_json(&state)).into(),
        Err(e) => Reply::error(subscribe_status(&e), &e.to_string()).into(),
    }
}

/// Authenticates a request by its `Authorization: Bearer` header or `token=` query
/// parameter. `Ok(None)` when authentication is off.
async fn grant(ctx: &NetCtx, peer: IpAddr, req: &Request<'_>) -> Result<Option<Arc<Grant>>, Reply> {
    if !ctx.auth_on() {
        return Ok(None);
    }
    let token = crate::auth::token_from(req.authorization, req.query);
    authenticate(ctx, peer, token.as_deref())
        .await
        .map(Some)
        .map_err(|d| Reply::error(d.status(), &d.text()))
}

/// Authenticates a request and checks that its token grants `right` on `ns/topic`
/// (`Ok(None)`: authentication is off).
async fn authorize(
    ctx: &NetCtx,
    peer: IpAddr,
    req: &Request<'_>,
    ns: &str,
    topic: &str,
    right: Right,
) -> Result<Option<Arc<Grant>>, Reply> {
    let grant = grant(ctx, peer, req).await?;
    permits(ctx, grant.as_deref(), ns, topic, right)
        .map_err(|(code, why)| Reply::error(status_of(code), &why))?;
    Ok(grant)
}

/// Publishes a request body.
pub(crate) async fn publish(
    ctx: &Rc<NetCtx>,
    key: TopicKey,
    body: Bytes,
    meta: PublishMeta,
) -> Reply {
    match ctx.shard.publish(key, body, meta).await {
        Ok(p) => {
            metrics::inc(&ctx.stats.publishes);
            Reply::json(
                200,
                format!(
                    "{{\"epoch\":{},\"seq\":{},\"durability\":\"{}\"}}",
                    p.epoch.0,
                    p.seq.0,
                    p.durability.as_str()
                ),
            )
        }
        Err(e) => Reply::error(publish_status(&e), &e.to_string()),
    }
}

/// Opens a subscription stream: the connection state the transport pumps, or the refusal.
pub(crate) fn open_stream(
    ctx: &Rc<NetCtx>,
    req: StreamReq,
    transport: &'static str,
    peer: IpAddr,
) -> Result<Rc<Conn>, Reply> {
    let conn = Conn::new(ctx.clone(), req.enc, transport, peer);
    if let Some(g) = req.grant {
        conn.set_grant(g);
    }
    match conn.subscribe(0, req.key, req.start, req.presence) {
        Ok(_) => Ok(conn),
        Err(e) => Err(Reply::error(subscribe_status(&e), &e.to_string())),
    }
}
