//! HTTP/2 (the `h2` crate), for h2c prior knowledge and h2 over TLS (ALPN).
//!
//! The same API as HTTP/1.1, through the same route table ([`crate::api`]): publish with
//! `POST`, stream subscriptions with `GET` (length-prefixed frames or SSE), `/healthz`,
//! `/metrics`, the admin API. Many subscription streams
//! share one connection; each has its own bounded queue ([`Conn`]) following the engine's
//! slow-subscriber policy, and its writer packs everything queued into one DATA frame
//! (h2 clients punish floods of tiny DATA frames) sent within the stream's flow-control window.
//!
//! Limits set explicitly: header list size (`header_bytes_max`), concurrent streams
//! (`subscriptions_per_connection_max`), reset streams pending accept and locally caused
//! resets (HTTP/2 rapid reset), CONTINUATION floods (bounded by the header list size), and the
//! send buffer per stream.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncWrite};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{Response, StatusCode};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use fanfare_core::{Encoded, TaskKind, TopicKey};

use crate::api::reply::{cors_headers, Reply};
use crate::api::{self, Action, Request};
use crate::ctx::NetCtx;
use crate::io::{timeout, Io, Stop};
use crate::metrics;
use crate::session::{Conn, Frame, Next};

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
    let handshake = timeout(left, b.handshake::<_, Data>(io)).await;
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
    let shared = Rc::new(H2Conn {
        active: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
        publishes: Slots::new(limits.publishes_in_flight_max),
    });
    let mut stop: Stop = Box::pin(ctx.shard.shutdown_signal());
    let mut stopping = false;
    // One timer for the connection's idle check, re-armed only when it fires (not per frame).
    let mut idle: Stop = Box::pin(glommio::timer::sleep(limits.idle_timeout));
    loop {
        // accept() also drives the connection's I/O for every stream.
        let step = if stopping {
            Step::Next(conn.accept().await.map(|r| r.map(Box::new)))
        } else {
            futures_lite::future::or(
                async { Step::Next(conn.accept().await.map(|r| r.map(Box::new))) },
                futures_lite::future::or(
                    async {
                        stop.as_mut().await;
                        Step::Stop
                    },
                    async {
                        idle.as_mut().await;
                        Step::IdleCheck
                    },
                ),
            )
            .await
        };
        match step {
            Step::Stop => {
                // Shutdown: GOAWAY, then keep driving the connection while streams drain.
                stopping = true;
                conn.graceful_shutdown();
            }
            Step::IdleCheck => {
                let quiet = shared.idle_since.get().elapsed();
                if shared.active.get() == 0 && quiet >= limits.idle_timeout {
                    // No stream for the idle time: GOAWAY, and the client closes (or the
                    // connection ends when it next reads).
                    metrics::inc(&ctx.stats.limit_idle);
                    tracing::debug!(peer = %peer, "closing an idle HTTP/2 connection");
                    stopping = true;
                    conn.graceful_shutdown();
                } else {
                    let left = limits.idle_timeout.saturating_sub(quiet);
                    let wait = if shared.active.get() == 0 {
                        left
                    } else {
                        limits.idle_timeout
                    };
                    idle = Box::pin(glommio::timer::sleep(wait.max(Duration::from_millis(1))));
                }
            }
            Step::Next(Some(Ok(incoming))) => {
                let (req, respond) = *incoming;
                shared.active.set(shared.active.get() + 1);
                let (ctx, shared) = (ctx.clone(), shared.clone());
                let tasks = ctx.shard.tasks();
                tasks
                    .spawn(TaskKind::Request, async move {
                        request(ctx, req, respond, peer, &shared).await;
                        shared.active.set(shared.active.get() - 1);
                        shared.idle_since.set(Instant::now());
                    })
                    .detach();
            }
            Step::Next(Some(Err(e))) => {
                if e.is_go_away() || e.reason().is_some() {
                    metrics::inc(&ctx.stats.protocol_errors);
                }
                tracing::debug!(error = %e, "HTTP/2 connection error");
                break;
            }
            Step::Next(None) => break,
        }
    }
    metrics::dec(&ctx.stats.connections_h2);
}

/// A stream the client opened: its request and the way to answer it.
type Incoming = (http::Request<RecvStream>, SendResponse<Data>);

/// What the connection loop does next.
enum Step {
    /// A new stream (boxed: the rare case carries the big value), an error, or the end of
    /// the connection.
    Next(Option<Result<Box<Incoming>, h2::Error>>),
    /// The broker is shutting down.
    Stop,
    /// The idle timer fired.
    IdleCheck,
}

/// What the streams of one HTTP/2 connection share.
struct H2Conn {
    /// Streams being served.
    active: Cell<usize>,
    /// When the last stream ended (the connection's idle time counts from it).
    idle_since: Cell<Instant>,
    /// Publishes in flight (`publishes_in_flight_max`).
    publishes: Slots,
}

/// A counting semaphore for one connection's publishes: past `max` in flight, a publish waits
/// for a slot, as a WebSocket's does. Waiters are bounded by the connection's stream limit.
struct Slots {
    used: Cell<usize>,
    max: usize,
    waiters: RefCell<VecDeque<Waker>>,
}

impl Slots {
    fn new(max: usize) -> Self {
        Self {
            used: Cell::new(0),
            max: max.max(1),
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    /// Waits for a slot; it is held until the guard drops.
    async fn acquire(&self, stats: &crate::metrics::NetStats) -> SlotGuard<'_> {
        if self.used.get() >= self.max {
            metrics::inc(&stats.limit_publish_window);
        }
        std::future::poll_fn(|cx| {
            if self.used.get() < self.max {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push_back(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        self.used.set(self.used.get() + 1);
        SlotGuard(self)
    }
}

/// A held publish slot.
struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let s = self.0;
        s.used.set(s.used.get().saturating_sub(1));
        if let Some(w) = s.waiters.borrow_mut().pop_front() {
            w.wake();
        }
    }
}

async fn request(
    ctx: Rc<NetCtx>,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Data>,
    peer: IpAddr,
    shared: &H2Conn,
) {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let action = {
        let r = Request {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            authorization: header("authorization"),
            accept_sse: header("accept").is_some_and(|v| v.contains("text/event-stream")),
            last_event_id: header("last-event-id"),
            idempotency_key: header("idempotency-key"),
            origin: header("origin"),
            host: req.uri().authority().map(|a| a.as_str()),
        };
        api::prepare(&ctx, &r, peer).await
    };
    let cors = req
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(cors_headers)
        .unwrap_or_default();
    match action {
        Action::Reply(rep) => reply(&mut respond, &rep),
        Action::Publish { key, meta } => {
            let _slot = shared.publishes.acquire(&ctx.stats).await;
            publish(&ctx, req.into_body(), respond, key, meta, cors).await
        }
        Action::Stream(req) => match api::open_stream(&ctx, req, "h2", peer) {
            Ok(conn) => stream(&ctx, respond, conn, &cors).await,
            Err(mut rep) => {
                rep.headers.extend(cors);
                reply(&mut respond, &rep)
            }
        },
    }
}

fn reply(respond: &mut SendResponse<Data>, rep: &Reply) {
    let body = rep.body.clone();
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(rep.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, rep.content_type)
        .header(http::header::CONTENT_LENGTH, body.len());
    for (name, value) in &rep.headers {
        resp = resp.header(*name, value.as_str());
    }
    let resp = resp.body(());
    let Ok(resp) = resp else { return };
    if let Ok(mut s) = respond.send_response(resp, body.is_empty()) {
        if !body.is_empty() {
            let _ = s.send_data(Data::Owned(body), true);
        }
    }
}

async fn publish(
    ctx: &Rc<NetCtx>,
    mut body: RecvStream,
    mut respond: SendResponse<Data>,
    key: TopicKey,
    meta: fanfare_core::PublishMeta,
    cors: Vec<(&'static str, String)>,
) {
    let max = ctx.shard.config().message_bytes_max;
    let mut payload = BytesMut::new();
    let deadline = Instant::now() + ctx.limits.body_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match timeout(left, body.data()).await {
            Some(Some(c)) => c,
            Some(None) => break,
            None => {
                metrics::inc(&ctx.stats.limit_body_time);
                let why = "request body not received in time";
                reply(&mut respond, &Reply::text(408, why));
                return;
            }
        };
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        if payload.len() + chunk.len() > max {
            metrics::inc(&ctx.stats.limit_message_size);
            let why = format!("message over the limit of {max} bytes");
            return reply(&mut respond, &Reply::text(413, why));
        }
        payload.extend_from_slice(&chunk);
    }
    let mut rep = api::publish(ctx, key, payload.freeze(), meta).await;
    rep.headers.extend(cors);
    reply(&mut respond, &rep);
}

/// Pumps an open subscription stream as DATA frames until the client resets it or the
/// subscription ends.
async fn stream(
    ctx: &Rc<NetCtx>,
    mut respond: SendResponse<Data>,
    conn: Rc<Conn>,
    headers: &[(&'static str, String)],
) {
    let content_type = conn.enc.content_type();
    let mut resp = Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-cache");
    for (name, value) in headers {
        resp = resp.header(*name, value.as_str());
    }
    let resp = resp.body(());
    let sent = resp.ok().and_then(|r| respond.send_response(r, false).ok());
    let Some(mut tx) = sent else {
        conn.unsubscribe_all();
        return;
    };
    let mut stop: Stop = Box::pin(ctx.shard.shutdown_signal());
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
            Some(Next::Last(b)) => (Data::Owned(b), true),
            None => {
                if conn.is_closing() {
                    break;
                }
                conn.close_with(conn.enc.goodbye(1001, "server shutting down"));
                continue;
            }
        };
        let n = data.len();
        if last {
            let _ = send(&mut tx, data, true).await;
            break;
        }
        // A stream closed while blocked on the client's flow-control window (too slow, token
        // expired) is reset, so the client learns it and its subscription goes now.
        let sent =
            futures_lite::future::or(async { Some(send(&mut tx, data, false).await) }, async {
                conn.closing_signal().await;
                None
            })
            .await;
        match sent {
            Some(Ok(())) => conn.wrote(n),
            Some(Err(_)) => break,
            None => {
                metrics::inc(&ctx.stats.h2_streams_reset);
                tx.send_reset(h2::Reason::CANCEL);
                break;
            }
        }
    }
    conn.writer_done();
    conn.unsubscribe_all();
}

/// One DATA payload for a batch: the frames side by side (copied into one buffer, as h2
/// clients punish floods of small DATA frames), or a lone fan-out frame as it is: shared by
/// every subscriber of the message, not copied per subscriber.
fn join(frames: &[Frame]) -> Data {
    if let [one] = frames {
        return match one {
            Frame::Shared(e) => Data::Shared(e.clone(), 0),
            own => Data::Owned(own.to_bytes()),
        };
    }
    let mut b = Vec::with_capacity(frames.iter().map(|f| f.len()).sum());
    for f in frames {
        f.put(&mut b);
    }
    Data::Owned(Bytes::from(b))
}

/// A DATA payload: a connection's own bytes, or a fan-out frame every subscriber of the
/// message on this shard shares (from its offset on). h2 takes any [`bytes::Buf`], so a
/// shared frame goes to it by reference count; h2 copies it into its write buffer as it
/// would a `Bytes`.
enum Data {
    Owned(Bytes),
    Shared(Encoded, usize),
}

impl Data {
    fn len(&self) -> usize {
        bytes::Buf::remaining(self)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` bytes (at most all), leaving the rest.
    fn split_to(&mut self, n: usize) -> Data {
        let n = n.min(self.len());
        match self {
            Data::Owned(b) => Data::Owned(b.split_to(n)),
            Data::Shared(e, at) => {
                // A window smaller than the frame (rare): the head is copied, the rest
                // stays shared.
                let head = Data::Owned(Bytes::copy_from_slice(&e[*at..*at + n]));
                *at += n;
                head
            }
        }
    }
}

impl bytes::Buf for Data {
    fn remaining(&self) -> usize {
        match self {
            Data::Owned(b) => b.len(),
            Data::Shared(e, at) => e.len().saturating_sub(*at),
        }
    }

    fn chunk(&self) -> &[u8] {
        match self {
            Data::Owned(b) => b,
            Data::Shared(e, at) => e.get(*at..).unwrap_or_default(),
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Data::Owned(b) => b.advance(n.min(b.len())),
            Data::Shared(e, at) => *at = (*at + n).min(e.len()),
        }
    }
}

/// Sends `data` within the stream's flow-control window, waiting for capacity (a payload
/// that fits the window goes whole, a shared frame included, without a copy).
async fn send(tx: &mut SendStream<Data>, mut data: Data, end: bool) -> Result<(), h2::Error> {
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
        let chunk = if n == data.len() {
            std::mem::replace(&mut data, Data::Owned(Bytes::new()))
        } else {
            data.split_to(n)
        };
        tx.send_data(chunk, end && data.is_empty())?;
    }
    if end {
        let _ = tx.send_data(Data::Owned(Bytes::new()), true);
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_lone_fan_out_frame_goes_to_h2_without_a_copy() {
        let frame: Encoded = Rc::from(&b"one message for every subscriber"[..]);
        let (a, b) = (
            join(&[Frame::Shared(frame.clone())]),
            join(&[Frame::Shared(frame.clone())]),
        );
        assert_eq!(a.chunk(), &frame[..]);
        assert_eq!(
            a.chunk().as_ptr(),
            frame.as_ptr(),
            "the frame itself, not a copy"
        );
        assert_eq!(
            b.chunk().as_ptr(),
            frame.as_ptr(),
            "every subscriber shares it"
        );
        // Batches are packed into one payload.
        let two = join(&[Frame::Shared(frame.clone()), Frame::Own(b"!".to_vec())]);
        assert_eq!(two.len(), frame.len() + 1);
        assert_eq!(&two.chunk()[frame.len()..], b"!");
    }

    #[test]
    fn a_shared_payload_splits_and_advances_like_bytes() {
        let frame: Encoded = Rc::from(&b"0123456789"[..]);
        let mut d = Data::Shared(frame, 0);
        let head = d.split_to(4);
        assert_eq!(head.chunk(), b"0123");
        assert_eq!(d.chunk(), b"456789");
        d.advance(2);
        assert_eq!(d.remaining(), 4);
        assert_eq!(d.chunk(), b"6789");
        let rest = d.split_to(100);
        assert_eq!(rest.chunk(), b"6789");
        assert!(d.is_empty());
        d.advance(1);
        assert_eq!(d.chunk(), b"");
    }
}
