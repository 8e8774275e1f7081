//! HTTP/1.1: a connection's requests, one after another (keep-alive), each answered through
//! the shared route table ([`crate::api`]); a WebSocket upgrade hands the connection to
//! [`super::ws`].

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::api::{self, reply::Reply, Action, Request};
use crate::ctx::NetCtx;
use crate::io::{read_some, timeout, unless, Io, Stop};
use crate::metrics;
use crate::session::{writer::writer, Conn};

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

/// Serves a connection's HTTP/1.1 requests; `buf` holds bytes already read and `chunk` is the
/// read buffer to reuse. The first request must arrive by `deadline`.
pub(crate) async fn serve<S: Io>(
    stream: S,
    mut buf: BytesMut,
    mut chunk: Vec<u8>,
    ctx: Rc<NetCtx>,
    deadline: Instant,
    peer: IpAddr,
) {
    let (mut r, mut w) = futures_lite::io::split(stream);
    let mut stop: Stop = Box::pin(ctx.shard.shutdown_signal());
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
                    respond(&mut w, &Reply::text(status, why), true).await;
                    return;
                }
                Parsed::Partial => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let read = unless(
                &mut stop,
                timeout(left, read_some(&mut r, &mut buf, &mut chunk, &ctx.stats)),
            )
            .await;
            match read {
                None => return, // shutdown before a request
                Some(None) => {
                    metrics::inc(&ctx.stats.limit_handshake_time);
                    if !buf.is_empty() {
                        let why = "request head not received in time";
                        respond(&mut w, &Reply::text(408, why), true).await;
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
            Box::pin(super::ws::session(
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
        let keep = Box::pin(request(
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
async fn request<S: Io>(
    ctx: &Rc<NetCtx>,
    head: Head,
    peer: IpAddr,
    r: &mut ReadHalf<S>,
    w: &mut WriteHalf<S>,
    buf: &mut BytesMut,
    chunk: &mut [u8],
    stop: &mut Stop,
) -> bool {
    let req = Request {
        method: &head.method,
        path: &head.path,
        query: head.query.as_deref(),
        authorization: head.authorization.as_deref(),
        accept_sse: head.accept_sse,
        last_event_id: head.last_event_id.as_deref(),
    };
    // A request answered without reading its body ends the connection: the unread body
    // cannot be told from the next request.
    let unread_body = head.chunked || head.content_length.is_some_and(|n| n > 0);
    match api::prepare(ctx, &req, peer).await {
        Action::Reply(rep) => {
            let close = head.close || unread_body;
            respond(w, &rep, close).await;
            !close
        }
        Action::Publish { key, publisher } => {
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
            while buf.len() < len {
                match unless(stop, read_some(r, buf, chunk, &ctx.stats)).await {
                    Some(Ok(n)) if n > 0 => {}
                    _ => return false,
                }
            }
            let body = buf.split_to(len).freeze();
            let rep = api::publish(ctx, key, body, publisher).await;
            respond(w, &rep, head.close).await;
            !head.close
        }
        Action::Stream {
            key,
            start,
            enc,
            grant,
        } => {
            match api::open_stream(ctx, key, start, enc, grant, peer) {
                Ok(conn) => stream(ctx, conn, r, w, buf, chunk, stop).await,
                Err(rep) => respond(w, &rep, true).await,
            }
            false
        }
    }
}

/// Pumps an open subscription stream as a chunked body until the client goes or the
/// subscription ends.
async fn stream<S: Io>(
    ctx: &Rc<NetCtx>,
    conn: Rc<Conn>,
    r: &mut ReadHalf<S>,
    w: &mut WriteHalf<S>,
    buf: &mut BytesMut,
    chunk: &mut [u8],
    stop: &mut Stop,
) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n\r\n",
        conn.enc.content_type()
    );
    if w.write_all(head.as_bytes()).await.is_err() {
        conn.unsubscribe_all();
        return;
    }
    // The writer owns the write side from here; this task keeps reading to see the client go.
    let pump = writer(conn.clone(), w, true);
    let reader = async {
        // Anything the client sends now is ignored; end of stream ends the subscription.
        loop {
            match unless(stop, read_some(r, buf, chunk, &ctx.stats)).await {
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
