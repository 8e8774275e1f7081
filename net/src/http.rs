//! HTTP/1.1: the first request on every plaintext connection, and the HTTP API.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/ws` + upgrade headers | WebSocket session (see [`crate::ws`]) |
//! | `POST /v1/topics/{ns}/{topic}` | publishes the body (`Content-Length` required); `200 {"epoch":E,"seq":S}` |
//! | `GET /v1/topics/{ns}/{topic}` | streams the subscription: SSE with `Accept: text/event-stream`, else length-prefixed `ServerMessage` frames (`application/x-fanfare-frames`) |
//! | `GET /healthz` | `200 ok` |
//! | `GET /metrics` | Prometheus text |
//!
//! A stream starts at `from=latest` (default), `from=last:N` or `from=<epoch>-<seq>` (the next
//! sequence wanted); an SSE `Last-Event-ID: <epoch>-<seq>` (the last event seen) wins over
//! `from` and resumes at `seq + 1`. Errors: 400 (bad name, bad `from`), 404, 405, 411
//! (no length), 413 (body over the message limit), 429 (topic limit), 431 (headers over the
//! limit), 503 (shutting down, connection limit).

use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use fanfare_core::{PublishError, Start, SubscribeError};
use futures_lite::io::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::auth::{Grant, Right};
use crate::conn::{self, permits, read_some, unless, Conn, Io, Mode, NetCtx, READ_CHUNK_BYTES};
use crate::metrics;
use fanfare_proto::message::ErrorCode;

/// Most header lines in a request.
const HEADERS_MAX: usize = 64;

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    query: Option<String>,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    accept_sse: bool,
    last_event_id: Option<String>,
    authorization: Option<String>,
    upgrade: bool,
    len: usize,
}

enum Parsed {
    Partial,
    Head(Head),
    Bad(u16, String),
}

fn parse_head(buf: &[u8], header_bytes_max: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= header_bytes_max => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(
                431,
                format!("request headers over {header_bytes_max} bytes or {HEADERS_MAX} lines"),
            )
        }
        Ok(httparse::Status::Partial) if buf.len() > header_bytes_max => {
            return Parsed::Bad(
                431,
                format!("request headers over {header_bytes_max} bytes"),
            )
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Bad(400, format!("malformed HTTP request: {e}")),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut head = Head {
        method: req.method.unwrap_or("").to_owned(),
        path,
        query,
        content_length: None,
        chunked: false,
        close: req.version == Some(0),
        accept_sse: false,
        last_event_id: None,
        authorization: None,
        upgrade: false,
        len,
    };
    for h in req.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        let v = v.trim();
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            match v.parse() {
                Ok(l) => head.content_length = Some(l),
                Err(_) => return Parsed::Bad(400, "invalid Content-Length".into()),
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if n.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            head.close |= v.contains("close");
            head.upgrade |= v.contains("upgrade");
        } else if n.eq_ignore_ascii_case("accept") {
            head.accept_sse |= v.contains("text/event-stream");
        } else if n.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(v.to_owned());
        } else if n.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(v.to_owned());
        }
    }
    Parsed::Head(head)
}

/// Serves one accepted connection: reads the first request head (within the handshake
/// time) and hands the connection to WebSocket or HTTP.
pub(crate) async fn handle(stream: TcpStream, ctx: Rc<NetCtx>) {
    let peer = stream
        .peer_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(ctx.limits.slow_deadline));
    let deadline = Instant::now() + ctx.limits.handshake_timeout;
    let Some(acceptor) = ctx.tls.clone() else {
        return serve(stream, ctx, deadline, peer).await;
    };
    // A TLS connection starts with a handshake record (content type 22).
    let mut first = [0u8; 1];
    let left = deadline.saturating_duration_since(Instant::now());
    let peeked = futures_lite::future::or(async { Some(stream.peek(&mut first).await) }, async {
        glommio::timer::sleep(left).await;
        None
    })
    .await;
    match peeked {
        Some(Ok(1)) if first[0] == 0x16 => {}
        Some(Ok(_)) => return serve(stream, ctx, deadline, peer).await,
        Some(Err(_)) => return,
        None => {
            metrics::inc(&ctx.stats.limit_handshake_time);
            return;
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let tls = futures_lite::future::or(async { Some(acceptor.accept(stream).await) }, async {
        glommio::timer::sleep(left).await;
        None
    })
    .await;
    match tls {
        Some(Ok(tls)) => {
            metrics::inc(&ctx.stats.connections_tls);
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                return Box::pin(crate::h2::serve(tls, BytesMut::new(), ctx, deadline, peer)).await;
            }
            Box::pin(serve(tls, ctx, deadline, peer)).await;
        }
        Some(Err(e)) => {
            metrics::inc(&ctx.stats.tls_handshake_errors);
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        None => metrics::inc(&ctx.stats.limit_handshake_time),
    }
}

/// Serves a connection's requests once its bytes are plaintext HTTP.
async fn serve<S: Io>(mut stream: S, ctx: Rc<NetCtx>, deadline: Instant, peer: IpAddr) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // Read until the bytes are either HTTP/2's preface or cannot be (HTTP/1.1).
    while buf.len() < crate::h2::PREFACE.len() && crate::h2::PREFACE.starts_with(&buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = futures_lite::future::or(
            async { Some(futures_lite::io::AsyncReadExt::read(&mut stream, &mut chunk).await) },
            async {
                glommio::timer::sleep(left).await;
                None
            },
        )
        .await;
        match read {
            Some(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                metrics::add(&ctx.stats.bytes_in, n as u64);
            }
            Some(_) => return,
            None => {
                metrics::inc(&ctx.stats.limit_handshake_time);
                return;
            }
        }
    }
    if buf.starts_with(crate::h2::PREFACE) {
        return Box::pin(crate::h2::serve(stream, buf, ctx, deadline, peer)).await;
    }
    let (mut r, mut w) = futures_lite::io::split(stream);
    let mut stop: Pin<Box<dyn std::future::Future<Output = ()>>> =
        Box::pin(ctx.shard.shutdown_signal());
    loop {
        // The first request must arrive within the handshake time; later ones within the
        // idle time.
        let head = loop {
            match parse_head(&buf, ctx.limits.header_bytes_max) {
                Parsed::Head(h) => break h,
                Parsed::Bad(status, why) => {
                    if status == 431 {
                        metrics::inc(&ctx.stats.limit_header_size);
                    }
                    respond(&mut w, status, "text/plain", why.as_bytes(), true).await;
                    return;
                }
                Parsed::Partial => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let read = unless(&mut stop, async {
                futures_lite::future::or(
                    async { Some(read_some(&mut r, &mut buf, &mut chunk, &ctx.stats).await) },
                    async {
                        glommio::timer::sleep(left).await;
                        None
                    },
                )
                .await
            })
            .await;
            match read {
                None => return, // shutdown before a request
                Some(None) => {
                    metrics::inc(&ctx.stats.limit_handshake_time);
                    if !buf.is_empty() {
                        respond(
                            &mut w,
                            408,
                            "text/plain",
                            b"request head not received in time",
                            true,
                        )
                        .await;
                    }
                    return;
                }
                Some(Some(Ok(0)) | Some(Err(_))) => return,
                Some(Some(Ok(_))) => {}
            }
        };
        if head.path == "/v1/ws" && head.upgrade {
            let upgrade = match fanfare_proto::ws::parse_upgrade(&buf, ctx.limits.header_bytes_max)
            {
                Ok(Some((up, n))) => {
                    bytes::Buf::advance(&mut buf, n);
                    up
                }
                Ok(None) => return,
                Err(e) => {
                    let body = e.to_string();
                    let resp = fanfare_proto::ws::reject_response(e.status(), &body);
                    let _ = w.write_all(resp.as_bytes()).await;
                    let _ = w.close().await;
                    return;
                }
            };
            metrics::inc(&ctx.stats.connections_ws);
            // Boxed, like the other protocols: the connection future stays small.
            Box::pin(crate::ws::session(
                ctx.clone(),
                r,
                w,
                buf,
                std::mem::take(&mut chunk),
                upgrade,
                stop,
                peer,
            ))
            .await;
            metrics::dec(&ctx.stats.connections_ws);
            return;
        }
        bytes::Buf::advance(&mut buf, head.len);
        metrics::inc(&ctx.stats.connections_http);
        // Boxed: an idle WebSocket connection should not carry the HTTP path's state inline.
        let keep = Box::pin(route(
            &ctx, head, peer, &mut r, &mut w, &mut buf, &mut chunk, &mut stop,
        ))
        .await;
        metrics::dec(&ctx.stats.connections_http);
        if !keep {
            return;
        }
    }
}

/// Answers one request; `true` when the connection may carry another.
#[allow(clippy::too_many_arguments)]
async fn route<S: Io>(
    ctx: &Rc<NetCtx>,
    head: Head,
    peer: IpAddr,
    r: &mut futures_lite::io::ReadHalf<S>,
    w: &mut futures_lite::io::WriteHalf<S>,
    buf: &mut BytesMut,
    chunk: &mut [u8],
    stop: &mut Pin<Box<dyn std::future::Future<Output = ()>>>,
) -> bool {
    let close = head.close;
    let topic_path = head
        .path
        .strip_prefix("/v1/topics/")
        .and_then(|rest| rest.split_once('/'));
    match (head.method.as_str(), head.path.as_str(), topic_path) {
        ("GET", "/healthz", _) => respond(w, 200, "text/plain", b"ok", close).await,
        ("GET", "/metrics", _) => {
            let body = ctx.registry.render();
            respond(w, 200, "text/plain; version=0.0.4", body.as_bytes(), close).await
        }
        ("GET", p, _) if p.starts_with("/v1/admin/") => {
            let (status, body) = match request_grant(
                ctx,
                peer,
                head.authorization.as_deref(),
                head.query.as_deref(),
            )
            .await
            {
                Ok(g) => crate::admin::serve(ctx, p, head.query.as_deref(), g.as_deref()).await,
                Err(refused) => refused,
            };
            respond(w, status, "application/json", body.as_bytes(), close).await
        }
        ("POST", _, Some((ns, topic))) => {
            // Authenticate before reading the body; a refused body is never read, so the
            // connection closes.
            let grant = match authorize(ctx, peer, &head, ns, topic, Right::Publish).await {
                Ok(g) => g,
                Err((status, body)) => {
                    respond(w, status, "application/json", body.as_bytes(), true).await;
                    return false;
                }
            };
            if head.chunked || head.content_length.is_none() {
                respond(w, 411, "text/plain", b"Content-Length is required", true).await;
                return false;
            }
            let len = head.content_length.unwrap_or(0);
            let max = ctx.shard.config().message_bytes_max;
            if len > max {
                metrics::inc(&ctx.stats.limit_message_size);
                let why = format!("message of {len} bytes over the limit of {max}");
                respond(w, 413, "text/plain", why.as_bytes(), true).await;
                return false;
            }
            while buf.len() < len {
                match unless(stop, read_some(r, buf, chunk, &ctx.stats)).await {
                    Some(Ok(n)) if n > 0 => {}
                    _ => return false,
                }
            }
            let body = buf.split_to(len).freeze();
            let (ns, topic) = (ns.to_owned(), topic.to_owned());
            let publisher = grant.map(|g| g.subject.clone());
            let (status, text) = publish_outcome(ctx, &ns, &topic, body, publisher).await;
            respond(w, status, "application/json", text.as_bytes(), close).await;
        }
        ("GET", _, Some((ns, topic))) => {
            let grant = match authorize(ctx, peer, &head, ns, topic, Right::Subscribe).await {
                Ok(g) => g,
                Err((status, body)) => {
                    respond(w, status, "application/json", body.as_bytes(), close).await;
                    return !close;
                }
            };
            let start = match stream_start(&head) {
                Ok(s) => s,
                Err(why) => {
                    respond(
                        w,
                        400,
                        "application/json",
                        json_error(&why).as_bytes(),
                        close,
                    )
                    .await;
                    return !close;
                }
            };
            let mode = if head.accept_sse {
                Mode::Sse
            } else {
                Mode::Frames
            };
            stream(
                ctx, ns, topic, start, mode, grant, peer, r, w, buf, chunk, stop,
            )
            .await;
            return false;
        }
        (_, "/healthz" | "/metrics", _) | (_, _, Some(_)) => {
            respond(w, 405, "text/plain", b"method not allowed", close).await
        }
        _ => respond(w, 404, "text/plain", b"not found", close).await,
    }
    !close
}

/// Authenticates an HTTP request by its `Authorization: Bearer` header or `token=` query
/// parameter. `Ok(None)` when authentication is off; a refusal is a status and JSON body.
pub(crate) async fn request_grant(
    ctx: &NetCtx,
    peer: IpAddr,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<Option<Arc<Grant>>, (u16, String)> {
    if !ctx.auth_on() {
        return Ok(None);
    }
    let token = crate::auth::token_from(authorization, query);
    ctx.authenticate(peer, token.as_deref())
        .await
        .map(Some)
        .map_err(|d| (d.status(), json_error(&d.text())))
}

/// Authenticates a request and checks that its token grants `right` on `ns/topic`
/// (`Ok(None)`: authentication is off). A refusal is a status and JSON body.
async fn authorize(
    ctx: &NetCtx,
    peer: IpAddr,
    head: &Head,
    ns: &str,
    topic: &str,
    right: Right,
) -> Result<Option<Arc<Grant>>, (u16, String)> {
    let grant = request_grant(
        ctx,
        peer,
        head.authorization.as_deref(),
        head.query.as_deref(),
    )
    .await?;
    permits(ctx, grant.as_deref(), ns, topic, right)
        .map_err(|(code, why)| (status_of(code), json_error(&why)))?;
    Ok(grant)
}

/// The HTTP status for an access-control error code.
pub(crate) fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::Forbidden => 403,
        ErrorCode::RateLimited => 429,
        ErrorCode::Unavailable => 503,
        _ => 401,
    }
}

/// Publishes an HTTP request body: the status and JSON body to answer with.
pub(crate) async fn publish_outcome(
    ctx: &Rc<NetCtx>,
    ns: &str,
    topic: &str,
    body: bytes::Bytes,
    publisher: Option<Arc<str>>,
) -> (u16, String) {
    match ctx.shard.publish(ns, topic, body, publisher).await {
        Ok(p) => {
            metrics::inc(&ctx.stats.publishes);
            (
                200,
                format!("{{\"epoch\":{},\"seq\":{}}}", p.epoch.0, p.seq.0),
            )
        }
        Err(e) => {
            let status = match e {
                PublishError::InvalidName { .. } => 400,
                PublishError::TooLarge { .. } => 413,
                PublishError::TopicLimit { .. } => 429,
                _ => 503,
            };
            (status, json_error(&e.to_string()))
        }
    }
}

/// The HTTP status for a refused subscription.
pub(crate) fn subscribe_status(e: &SubscribeError) -> u16 {
    match e {
        SubscribeError::InvalidName { .. } | SubscribeError::InvalidResume { .. } => 400,
        SubscribeError::TopicLimit { .. } | SubscribeError::TooManySubscriptions { .. } => 429,
        _ => 503,
    }
}

pub(crate) fn json_error(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect();
    format!("{{\"error\":\"{escaped}\"}}")
}

/// Where a stream starts, from `Last-Event-ID` or the `from` query parameter.
fn stream_start(head: &Head) -> Result<Start, String> {
    start_from(head.last_event_id.as_deref(), head.query.as_deref())
}

/// Where a stream starts: `Last-Event-ID` (the last event seen) wins over `from=`.
pub(crate) fn start_from(
    last_event_id: Option<&str>,
    query: Option<&str>,
) -> Result<Start, String> {
    if let Some(id) = last_event_id {
        let (epoch, seq) = fanfare_proto::sse::parse_event_id(id).map_err(|e| e.to_string())?;
        return Ok(Start::At {
            epoch,
            seq: seq.saturating_add(1),
        });
    }
    let from = query_param(query, "from").unwrap_or("latest");
    parse_from(from)
}

/// The value of `name` in a query string (`a=1&b=2`), as sent (not percent-decoded).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Parses `latest`, `last:N` or `<epoch>-<seq>`.
pub fn parse_from(s: &str) -> Result<Start, String> {
    if s == "latest" {
        return Ok(Start::Latest);
    }
    if let Some(n) = s.strip_prefix("last:") {
        return n
            .parse()
            .map(Start::LastN)
            .map_err(|_| format!("bad from={s}: last:N needs a count"));
    }
    let (epoch, seq) = fanfare_proto::sse::parse_event_id(s)
        .map_err(|_| format!("bad from={s}: use latest, last:N or <epoch>-<seq>"))?;
    Ok(Start::At { epoch, seq })
}

#[allow(clippy::too_many_arguments)]
async fn stream<S: Io>(
    ctx: &Rc<NetCtx>,
    ns: &str,
    topic: &str,
    start: Start,
    mode: Mode,
    grant: Option<Arc<Grant>>,
    peer: IpAddr,
    r: &mut futures_lite::io::ReadHalf<S>,
    w: &mut futures_lite::io::WriteHalf<S>,
    buf: &mut BytesMut,
    chunk: &mut [u8],
    stop: &mut Pin<Box<dyn std::future::Future<Output = ()>>>,
) {
    let conn = Conn::new(ctx.clone(), mode, peer);
    if let Some(g) = grant {
        conn.set_grant(g);
    }
    let accepted = conn.subscribe(0, ns, topic, start);
    let acc = match accepted {
        Ok(a) => a,
        Err(e) => {
            let status = subscribe_status(&e);
            respond(
                w,
                status,
                "application/json",
                json_error(&e.to_string()).as_bytes(),
                true,
            )
            .await;
            return;
        }
    };
    let content_type = if mode == Mode::Sse {
        "text/event-stream"
    } else {
        "application/x-fanfare-frames"
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n\r\n"
    );
    if w.write_all(head.as_bytes()).await.is_err() {
        ctx.shard.unsubscribe(acc.sub);
        return;
    }
    // The writer owns the write side from here; this task keeps reading to see the client go.
    let writer = conn::writer(conn.clone(), w, true);
    let reader = async {
        // Anything the client sends now is ignored; end of stream ends the subscription.
        loop {
            match unless(stop, read_some(r, buf, chunk, &ctx.stats)).await {
                Some(Ok(n)) if n > 0 => buf.clear(),
                Some(_) => break,
                None => {
                    conn.close_with(conn::goodbye(mode, 1001, "server shutting down"));
                    break;
                }
            }
            if conn.is_closing() {
                break;
            }
        }
    };
    futures_lite::future::or(writer, async {
        reader.await;
        // Client gone or shutdown: let the writer send what is queued, then stop.
        conn.close_with(conn::goodbye(mode, 1001, "server shutting down"));
        std::future::pending::<()>().await
    })
    .await;
    conn.unsubscribe_all();
}

/// Writes a complete response.
pub(crate) async fn respond<S: Io>(
    w: &mut futures_lite::io::WriteHalf<S>,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
) {
    let phrase = match status {
        200 => "OK",
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
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {conn}\r\n{challenge}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    let _ = w.write_all(&out).await;
    if close {
        // Send FIN now: the socket itself may outlive this task while a cancelled read
        // completes, and the client should not wait for that.
        let _ = w.close().await;
    }
}
