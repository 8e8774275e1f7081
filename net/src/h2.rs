//! HTTP/2 (the `h2` crate), for h2c prior knowledge and h2 over TLS (ALPN).
//!
//! The same API as HTTP/1.1 ([`crate::http`]): publish with `POST`, stream subscriptions with
//! `GET` (length-prefixed frames or SSE), `/healthz`, `/metrics`. Many subscription streams
//! share one connection; each has its own bounded queue ([`Conn`]) following the engine's
//! slow-subscriber policy, and its writer packs everything queued into one DATA frame
//! (h2 clients punish floods of tiny DATA frames) sent within the stream's flow-control window.
//!
//! Limits set explicitly: header list size (`header_bytes_max`), concurrent streams
//! (`subscriptions_per_connection_max`), reset streams pending accept and locally caused
//! resets (HTTP/2 rapid reset), CONTINUATION floods (bounded by the header list size), and the
//! send buffer per stream.

use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncWrite};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{Request, Response, StatusCode};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::auth::Right;
use crate::conn::{permits, unless, Conn, Io, Mode, NetCtx, Next};
use crate::metrics;

/// The client connection preface of HTTP/2 (RFC 9113, 3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Streams reset by the client before we accepted them, past which the connection is closed
/// (rapid reset, CVE-2023-44487).
const PENDING_ACCEPT_RESETS_MAX: usize = 32;
/// Resets we caused (bad requests) per connection before it is closed.
const LOCAL_RESETS_MAX: usize = 64;
/// Reset streams remembered per connection.
const CONCURRENT_RESETS_MAX: usize = 64;

/// Serves one HTTP/2 connection; `prefix` holds bytes already read from `io`.
pub(crate) async fn serve<S: Io>(
    io: S,
    prefix: BytesMut,
    ctx: Rc<NetCtx>,
    deadline: Instant,
    peer: IpAddr,
) {
    let limits = ctx.limits.clone();
    let io = Rewind { prefix, inner: io }.compat();
    let mut b = h2::server::Builder::new();
    b.max_header_list_size(limits.header_bytes_max.min(u32::MAX as usize) as u32)
        .max_concurrent_streams(
            limits
                .subscriptions_per_connection_max
                .min(u32::MAX as usize) as u32,
        )
        .max_pending_accept_reset_streams(PENDING_ACCEPT_RESETS_MAX)
        .max_local_error_reset_streams(Some(LOCAL_RESETS_MAX))
        .max_concurrent_reset_streams(CONCURRENT_RESETS_MAX)
        .max_send_buffer_size(limits.send_queue_bytes_max.clamp(16 * 1024, 4 << 20));
    let left = deadline.saturating_duration_since(Instant::now());
    let handshake =
        futures_lite::future::or(async { Some(b.handshake::<_, Bytes>(io).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
    let mut conn = match handshake {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            metrics::inc(&ctx.stats.protocol_errors);
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
        None => {
            metrics::inc(&ctx.stats.limit_handshake_time);
            return;
        }
    };
    metrics::inc(&ctx.stats.connections_h2);
    let mut stop: Pin<Box<dyn std::future::Future<Output = ()>>> =
        Box::pin(ctx.shard.shutdown_signal());
    let mut stopping = false;
    loop {
        // accept() also drives the connection's I/O for every stream.
        let next = if stopping {
            Some(conn.accept().await)
        } else {
            unless(&mut stop, conn.accept()).await
        };
        match next {
            None => {
                // Shutdown: GOAWAY, then keep driving the connection while streams drain.
                stopping = true;
                conn.graceful_shutdown();
            }
            Some(Some(Ok((req, respond)))) => {
                glommio::spawn_local(request(ctx.clone(), req, respond, peer)).detach();
            }
            Some(Some(Err(e))) => {
                if e.is_go_away() || e.reason().is_some() {
                    metrics::inc(&ctx.stats.protocol_errors);
                }
                tracing::debug!(error = %e, "HTTP/2 connection error");
                break;
            }
            Some(None) => break,
        }
    }
    metrics::dec(&ctx.stats.connections_h2);
}

async fn request(
    ctx: Rc<NetCtx>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: IpAddr,
) {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    let topic = path
        .strip_prefix("/v1/topics/")
        .and_then(|r| r.split_once('/'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let needs_token = path.starts_with("/v1/admin/") || topic.is_some();
    let grant = if needs_token {
        match crate::http::request_grant(&ctx, peer, authorization.as_deref(), query.as_deref())
            .await
        {
            Ok(g) => g,
            Err((status, body)) => {
                return reply(&mut respond, status, "application/json", Bytes::from(body))
            }
        }
    } else {
        None
    };
    let right = if method == http::Method::POST {
        Right::Publish
    } else {
        Right::Subscribe
    };
    if let Some((ns, topic)) = &topic {
        if let Err((code, why)) = permits(&ctx, grant.as_deref(), ns, topic, right) {
            return reply(
                &mut respond,
                crate::http::status_of(code),
                "application/json",
                Bytes::from(crate::http::json_error(&why)),
            );
        }
    }
    match (method.as_str(), path.as_str(), topic) {
        ("GET", "/healthz", _) => reply(&mut respond, 200, "text/plain", Bytes::from_static(b"ok")),
        ("GET", "/metrics", _) => reply(
            &mut respond,
            200,
            "text/plain; version=0.0.4",
            Bytes::from(ctx.registry.render()),
        ),
        ("GET", p, _) if p.starts_with("/v1/admin/") => {
            let (status, body) =
                crate::admin::serve(&ctx, p, query.as_deref(), grant.as_deref()).await;
            reply(&mut respond, status, "application/json", Bytes::from(body))
        }
        ("POST", _, Some((ns, topic))) => {
            let publisher = grant.map(|g| g.subject.clone());
            publish(&ctx, req.into_body(), respond, &ns, &topic, publisher).await
        }
        ("GET", _, Some((ns, topic))) => {
            let headers = req.headers();
            let accept_sse = headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/event-stream"));
            let last_event_id = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let start = match crate::http::start_from(last_event_id.as_deref(), query.as_deref()) {
                Ok(s) => s,
                Err(why) => {
                    return reply(
                        &mut respond,
                        400,
                        "application/json",
                        Bytes::from(crate::http::json_error(&why)),
                    )
                }
            };
            let mode = if accept_sse { Mode::Sse } else { Mode::Frames };
            stream(&ctx, respond, &ns, &topic, start, mode, grant, peer).await;
        }
        (_, "/healthz" | "/metrics", _) | (_, _, Some(_)) => reply(
            &mut respond,
            405,
            "text/plain",
            Bytes::from_static(b"method not allowed"),
        ),
        _ => reply(
            &mut respond,
            404,
            "text/plain",
            Bytes::from_static(b"not found"),
        ),
    }
}

fn reply(respond: &mut SendResponse<Bytes>, status: u16, content_type: &str, body: Bytes) {
    let resp = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(());
    let Ok(resp) = resp else { return };
    if let Ok(mut s) = respond.send_response(resp, body.is_empty()) {
        if !body.is_empty() {
            let _ = s.send_data(body, true);
        }
    }
}

async fn publish(
    ctx: &Rc<NetCtx>,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    ns: &str,
    topic: &str,
    publisher: Option<std::sync::Arc<str>>,
) {
    let max = ctx.shard.config().message_bytes_max;
    let mut payload = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        if payload.len() + chunk.len() > max {
            metrics::inc(&ctx.stats.limit_message_size);
            let why = format!("message over the limit of {max} bytes");
            return reply(&mut respond, 413, "text/plain", Bytes::from(why));
        }
        payload.extend_from_slice(&chunk);
    }
    let (status, text) =
        crate::http::publish_outcome(ctx, ns, topic, payload.freeze(), publisher).await;
    reply(&mut respond, status, "application/json", Bytes::from(text));
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    ctx: &Rc<NetCtx>,
    mut respond: SendResponse<Bytes>,
    ns: &str,
    topic: &str,
    start: fanfare_core::Start,
    mode: Mode,
    grant: Option<std::sync::Arc<crate::auth::Grant>>,
    peer: IpAddr,
) {
    let conn = Conn::new(ctx.clone(), mode, peer);
    if let Some(g) = grant {
        conn.set_grant(g);
    }
    let acc = match conn.subscribe(0, ns, topic, start) {
        Ok(a) => a,
        Err(e) => {
            let status = crate::http::subscribe_status(&e);
            return reply(
                &mut respond,
                status,
                "application/json",
                Bytes::from(crate::http::json_error(&e.to_string())),
            );
        }
    };
    let content_type = if mode == Mode::Sse {
        "text/event-stream"
    } else {
        "application/x-fanfare-frames"
    };
    let resp = Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(());
    let sent = resp.ok().and_then(|r| respond.send_response(r, false).ok());
    let Some(mut tx) = sent else {
        ctx.shard.unsubscribe(acc.sub);
        return;
    };
    let mut stop: Pin<Box<dyn std::future::Future<Output = ()>>> =
        Box::pin(ctx.shard.shutdown_signal());
    loop {
        let next = futures_lite::future::or(async { Some(conn.next_batch().await) }, async {
            // The client reset the stream, or the broker is stopping.
            futures_lite::future::or(
                std::future::poll_fn(|cx| tx.poll_reset(cx).map(|_| ())),
                stop.as_mut(),
            )
            .await;
            None
        })
        .await;
        let (data, last) = match next {
            Some(Next::Frames(frames)) => (join(&frames), false),
            Some(Next::Last(b)) => (b, true),
            None => {
                if conn.is_closing() {
                    break;
                }
                conn.close_with(crate::conn::goodbye(mode, 1001, "server shutting down"));
                continue;
            }
        };
        if send(&mut tx, data, last).await.is_err() || last {
            break;
        }
    }
    conn.writer_done();
    conn.unsubscribe_all();
}

/// One DATA payload for a batch: the frames side by side.
fn join(frames: &[crate::conn::Frame]) -> Bytes {
    if let [one] = frames {
        return one.to_bytes();
    }
    let mut b = BytesMut::with_capacity(frames.iter().map(|f| f.len()).sum());
    for f in frames {
        b.extend_from_slice(f);
    }
    b.freeze()
}

/// Sends `data` within the stream's flow-control window, waiting for capacity.
async fn send(tx: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), h2::Error> {
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let cap = std::future::poll_fn(|cx| tx.poll_capacity(cx)).await;
        let n = match cap {
            Some(Ok(n)) => n.min(data.len()),
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n);
        tx.send_data(chunk, end && data.is_empty())?;
    }
    if end {
        let _ = tx.send_data(Bytes::new(), true);
    }
    Ok(())
}

/// An I/O that first yields bytes already read (the preface), then reads from `inner`.
struct Rewind<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S: Io> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.len());
            buf[..n].copy_from_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: Io> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
