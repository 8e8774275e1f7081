//! HTTP/1.1: a connection's requests, one after another (keep-alive), each answered through
//! the shared route table ([`crate::api`]); a WebSocket upgrade hands the connection to
//! [`super::ws`].

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use fanfare_proto::http::{parse_head, ParsedHead, RequestHead as Head};
use futures_lite::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::api::reply::{cors_headers, Reply};
use crate::api::{self, Action, Request};
use crate::ctx::NetCtx;
use crate::io::{read_some, timeout, unless, Io, Stop};
use crate::metrics;
use crate::session::{flush, Conn};

/// A connection a WebSocket upgrade request asked to take over: its halves, the bytes read
/// after the request head, and the upgrade.
pub(crate) struct Upgraded<S> {
    pub r: ReadHalf<S>,
    pub w: WriteHalf<S>,
    pub buf: BytesMut,
    pub up: fanfare_proto::ws::Upgrade,
}

/// Serves a connection's HTTP/1.1 requests; `buf` holds bytes already read. The first request
/// must arrive by `deadline`. A WebSocket upgrade ends it: the connection is returned to the
/// caller, which runs the session once this future (and its memory) is gone.
pub(crate) async fn serve<S: Io>(
    stream: S,
    mut buf: BytesMut,
    ctx: Rc<NetCtx>,
    deadline: Instant,
    peer: IpAddr,
) -> Option<Upgraded<S>> {
    let (mut r, mut w) = futures_lite::io::split(stream);
    let mut stop: Stop = Box::pin(ctx.shard.shutdown_signal());
    // The first request's head must be complete by `deadline` (the handshake time from
    // accept). A later one may take the idle time to start, then the handshake time from its
    // first byte to be complete.
    let mut head_deadline = Some(deadline);
    let mut idle = None;
    loop {
        let head = loop {
            match parse_head(&buf, ctx.limits.header_bytes_max) {
                ParsedHead::Head(h) => break h,
                ParsedHead::Bad { status, reason } => {
                    if status == 431 {
                        metrics::inc(&ctx.stats.limit_header_size);
                    }
                    respond(&mut w, &Reply::text(status, reason), true).await;
                    return None;
                }
                ParsedHead::Partial => {}
            }
            if head_deadline.is_none() && !buf.is_empty() {
                head_deadline = Some(Instant::now() + ctx.limits.handshake_timeout);
            }
            let left = match head_deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => ctx.limits.idle_timeout,
            };
            let read = unless(
                &mut stop,
                timeout(left, read_some(&mut r, &mut buf, &ctx.stats)),
            )
            .await;
            match read {
                None => return None, // shutdown before a request
                Some(None) if head_deadline.is_none() => {
                    // Kept alive and idle for the idle time: close quietly.
                    metrics::inc(&ctx.stats.limit_idle);
                    return None;
                }
                Some(None) => {
                    metrics::inc(&ctx.stats.limit_handshake_time);
                    if !buf.is_empty() {
                        let why = "request head not received in time";
                        respond(&mut w, &Reply::text(408, why), true).await;
                    }
                    return None;
                }
                Some(Some(Ok(0)) | Some(Err(_))) => return None,
                Some(Some(Ok(_))) => {}
            }
        };
        drop(idle.take());
        if head.path == "/v1/ws" && head.upgrade {
            let upgrade = match fanfare_proto::ws::parse_upgrade(&buf, ctx.limits.header_bytes_max)
            {
                Ok(Some((up, n))) => {
                    bytes::Buf::advance(&mut buf, n);
                    up
                }
                Ok(None) => return None,
                Err(e) => {
                    let body = e.to_string();
                    let resp = fanfare_proto::ws::reject_response(e.status(), &body);
                    let _ = w.write_all(resp.as_bytes()).await;
                    let _ = w.close().await;
                    return None;
                }
            };
            return Some(Upgraded {
                r,
                w,
                buf,
                up: upgrade,
            });
        }
        bytes::Buf::advance(&mut buf, head.len);
        metrics::inc(&ctx.stats.connections_http);
        // Boxed: an idle WebSocket connection should not carry the HTTP path's state inline.
        let keep = Box::pin(request(
            &ctx, head, peer, &mut r, &mut w, &mut buf, &mut stop,
        ))
        .await;
        metrics::dec(&ctx.stats.connections_http);
        if !keep {
            return None;
        }
        head_deadline = None;
        idle = Some(Gauge::up(&ctx.stats.connections_http_idle));
    }
}

/// A gauge held up while a value lives (so every return path takes it down).
struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Gauge<'a> {
    fn up(g: &'a std::sync::atomic::AtomicU64) -> Self {
        metrics::inc(g);
        Self(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        metrics::dec(self.0);
    }
}

/// Answers one request; `true` when the connection may carry another.
#[allow(clippy::too_many_arguments)]
async fn request<S: Io>(
    ctx: &Rc<NetCtx>,
    head: Head,
    peer: IpAddr,
    r: &mut ReadHalf<S>,
    w: &mut WriteHalf<S>,
    buf: &mut BytesMut,
    stop: &mut Stop,
) -> bool {
    let req = Request {
        method: &head.method,
        path: &head.path,
        query: head.query.as_deref(),
        authorization: head.authorization.as_deref(),
        accept_sse: head.accept_sse,
        last_event_id: head.last_event_id.as_deref(),
        idempotency_key: head.idempotency_key.as_deref(),
        origin: head.origin.as_deref(),
        host: head.host.as_deref(),
    };
    let cors = || head.origin.as_deref().map(cors_headers).unwrap_or_default();
    // A request answered without reading its body ends the connection: the unread body
    // cannot be told from the next request.
    let unread_body = head.chunked || head.content_length.is_some_and(|n| n > 0);
    match api::prepare(ctx, &req, peer).await {
        Action::Reply(rep) => {
            let close = head.close || unread_body;
            respond(w, &rep, close).await;
            !close
        }
        Action::Publish { key, meta } => {
            let Some(len) = head.content_length.filter(|_| !head.chunked) else {
                respond(w, &Reply::text(411, "Content-Length is required"), true).await;
                return false;
            };
            let max = ctx.shard.config().message_bytes_max;
            if len > max {
                metrics::inc(&ctx.stats.limit_message_size);
                let why = format!("message of {len} bytes over the limit of {max}");
                respond(w, &Reply::text(413, why), true).await;
                return false;
            }
            if head.expect_continue && buf.len() < len {
                // The client waits for this before sending the body (curl does for large
                // bodies); every refusal above was answered without it.
                if w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                    return false;
                }
            }
            let body_deadline = Instant::now() + ctx.limits.body_timeout;
            while buf.len() < len {
                let left = body_deadline.saturating_duration_since(Instant::now());
                match unless(stop, timeout(left, read_some(r, buf, &ctx.stats))).await {
                    Some(Some(Ok(n))) if n > 0 => {}
                    Some(None) => {
                        metrics::inc(&ctx.stats.limit_body_time);
                        let why = "request body not received in time";
                        respond(w, &Reply::text(408, why), true).await;
                        return false;
                    }
                    _ => return false,
                }
            }
            let body = buf.split_to(len).freeze();
            let mut rep = api::publish(ctx, key, body, meta).await;
            rep.headers.extend(cors());
            respond(w, &rep, head.close).await;
            !head.close
        }
        Action::Stream(req) => {
            match api::open_stream(ctx, req, "http/1.1", peer) {
                Ok(conn) => stream(ctx, conn, &cors(), r, w, buf, stop).await,
                Err(mut rep) => {
                    rep.headers.extend(cors());
                    respond(w, &rep, true).await
                }
            }
            false
        }
    }
}

/// Pumps an open subscription stream as a chunked body until the client goes or the
/// subscription ends.
#[allow(clippy::too_many_arguments)]
async fn stream<S: Io>(
    ctx: &Rc<NetCtx>,
    conn: Rc<Conn>,
    headers: &[(&'static str, String)],
    r: &mut ReadHalf<S>,
    w: &mut WriteHalf<S>,
    buf: &mut BytesMut,
    stop: &mut Stop,
) {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n",
        conn.enc.content_type()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if w.write_all(head.as_bytes()).await.is_err() {
        conn.unsubscribe_all();
        return;
    }
    // The writer owns the write side from here; this task keeps reading to see the client go.
    let pump = flush::drive(&conn, w, true);
    let reader = async {
        // Anything the client sends now is ignored; end of stream ends the subscription.
        loop {
            match unless(stop, read_some(r, buf, &ctx.stats)).await {
                Some(Ok(n)) if n > 0 => buf.clear(),
                Some(_) => break,
                None => {
                    conn.close_with(conn.enc.goodbye(1001, "server shutting down"));
                    break;
                }
            }
            if conn.is_closing() {
                break;
            }
        }
    };
    futures_lite::future::or(pump, async {
        reader.await;
        // Client gone or shutdown: let the writer send what is queued, then stop.
        conn.close_with(conn.enc.goodbye(1001, "server shutting down"));
        std::future::pending::<()>().await
    })
    .await;
    conn.unsubscribe_all();
}

/// Writes a complete response.
pub(crate) async fn respond<S: Io>(w: &mut WriteHalf<S>, rep: &Reply, close: bool) {
    let (status, content_type, body) = (rep.status, rep.content_type, &rep.body);
    let phrase = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let conn = if close { "close" } else { "keep-alive" };
    let challenge = if status == 401 {
        "WWW-Authenticate: Bearer realm=\"fanfare\"\r\n"
    } else {
        ""
    };
    let mut head = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {conn}\r\n{challenge}",
        body.len()
    );
    for (name, value) in &rep.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let _ = w.write_all(&out).await;
    if close {
        // Send FIN now: the socket itself may outlive this task while a cancelled read
        // completes, and the client should not wait for that.
        let _ = w.close().await;
    }
}
