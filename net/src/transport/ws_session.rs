//! A WebSocket session as one plain future: the answer to the upgrade, then reads, answers
//! and output in the connection's one task.
//!
//! Memory: an idle WebSocket is this future (its decoder, its input buffer when a message is
//! cut short, its halves) in one allocation, the [`Conn`], and the socket's pending poll;
//! docs/ARCHITECTURE.md, "What a connection costs". Written as a struct with a `poll`, not an
//! `async fn`: an async fn keeps its arguments twice and room for the largest await, and a
//! separate writer task would cost a task and a buffer per connection.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::ws::{self as wsp, close_code, Message, Role, Upgrade};
use futures_lite::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::access::authenticate;
use crate::ctx::NetCtx;
use crate::io::{poll_read_some, Io};
use crate::metrics;
use crate::moment::Moment;
use crate::session::encoder::{Encoder, WS};
use crate::session::flush::Flusher;
use crate::session::Conn;
use crate::transport::ws::{on_message, refuse_buffered, Step, SUBPROTOCOL};

type Accepting<S> = Pin<Box<dyn Future<Output = Option<(Rc<Conn>, WriteHalf<S>)>>>>;

/// A WebSocket session over a connection an HTTP/1.1 upgrade handed over: the answer to the
/// upgrade (origin and token checks, boxed apart and freed once answered), then the session.
pub(crate) fn session<S: Io>(
    ctx: Rc<NetCtx>,
    r: ReadHalf<S>,
    w: WriteHalf<S>,
    buf: BytesMut,
    up: Upgrade,
    peer: IpAddr,
) -> Pin<Box<dyn Future<Output = ()>>> {
    metrics::inc(&ctx.stats.connections_ws);
    let accepting: Accepting<S> = Box::pin(accept(ctx.clone(), w, up, peer));
    Box::pin(WsSession {
        ctx,
        stage: Stage::Accepting(accepting, Some((r, buf))),
    })
}

/// Answers the upgrade; the connection and its write half once accepted.
async fn accept<S: Io>(
    ctx: Rc<NetCtx>,
    mut w: WriteHalf<S>,
    up: Upgrade,
    peer: IpAddr,
) -> Option<(Rc<Conn>, WriteHalf<S>)> {
    if !ctx
        .auth
        .origin_allowed(up.origin.as_deref(), up.host.as_deref())
    {
        metrics::inc(&ctx.stats.origin_rejected);
        tracing::info!(peer = %peer, origin = up.origin.as_deref().unwrap_or(""), "WebSocket origin not allowed");
        let _ = w
            .write_all(wsp::reject_response(403, "origin not allowed").as_bytes())
            .await;
        let _ = w.close().await;
        return None;
    }
    // A token at the upgrade (header or query string) is checked before the upgrade is
    // accepted; without one, the first message must carry it (Hello).
    let mut grant = None;
    if ctx.auth_on() {
        if let Some(token) =
            crate::auth::token_from(up.authorization.as_deref(), up.query.as_deref())
        {
            match authenticate(&ctx, peer, Some(&token)).await {
                Ok(g) => grant = Some(g),
                Err(d) => {
                    let _ = w
                        .write_all(wsp::reject_response(d.status(), &d.text()).as_bytes())
                        .await;
                    let _ = w.close().await;
                    return None;
                }
            }
        }
    }
    let proto = up
        .protocols
        .iter()
        .any(|p| p == SUBPROTOCOL)
        .then_some(SUBPROTOCOL);
    if w.write_all(wsp::accept_response(&up.key, proto).as_bytes())
        .await
        .is_err()
    {
        return None;
    }
    let conn = Conn::new(ctx.clone(), &WS, "ws", peer);
    if let Some(g) = grant {
        conn.set_grant(g);
    }
    Some((conn, w))
}

struct WsSession<S> {
    ctx: Rc<NetCtx>,
    stage: Stage<S>,
}

enum Stage<S> {
    /// Answering the upgrade; the read side waits beside it.
    Accepting(Accepting<S>, Option<(ReadHalf<S>, BytesMut)>),
    Running(Running<S>),
    Over,
}

impl<S> Drop for WsSession<S> {
    fn drop(&mut self) {
        metrics::dec(&self.ctx.stats.connections_ws);
    }
}

impl<S: Io> Future for WsSession<S> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Stage::Accepting(accepting, rest) = &mut this.stage {
            let accepted = match accepting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(a) => a,
            };
            match (accepted, rest.take()) {
                (Some((conn, w)), Some((r, buf))) => {
                    this.stage = Stage::Running(Running::new(conn, r, w, buf));
                }
                _ => {
                    this.stage = Stage::Over;
                    return Poll::Ready(());
                }
            }
        }
        match &mut this.stage {
            Stage::Running(run) => {
                let done = run.poll(cx);
                if done.is_ready() {
                    this.stage = Stage::Over;
                }
                done
            }
            _ => Poll::Ready(()),
        }
    }
}

/// Where a running session is.
enum Phase {
    /// Reading and answering messages.
    Reading,
    /// The broker is stopping: in-flight publishes get their answers, up to the drain time.
    Draining(Pin<Box<glommio::timer::Timer>>),
    /// Reading is over: the output runs to its end (bounded by the socket's write timeout,
    /// and at shutdown by the drain time).
    Ending(Option<Pin<Box<glommio::timer::Timer>>>),
    /// The last bytes are out: what the client still sends is read and dropped until it
    /// closes, for at most [`LINGER`]. Closing a socket with unread input makes the kernel
    /// send a reset, which can destroy our last frames (acks, the close frame) in the
    /// client's receive buffer before it reads them.
    Lingering(Pin<Box<glommio::timer::Timer>>),
}

/// The longest a session reads on after its last bytes went out ([`Phase::Lingering`]).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a lingering session does per wake-up before it yields to the shard's other tasks.
const LINGER_READS_PER_POLL: usize = 16;

/// What reading found.
enum Read {
    /// Reading is over (the connection is closing).
    End,
    /// The broker is stopping.
    Stop,
}

struct Running<S> {
    conn: Rc<Conn>,
    r: ReadHalf<S>,
    w: WriteHalf<S>,
    buf: BytesMut,
    dec: wsp::Decoder,
    dlim: DecodeLimits,
    out: Flusher,
    /// A request that waits (a token check), polled before anything else is read.
    wait: Option<Pin<Box<dyn Future<Output = bool>>>>,
    phase: Phase,
    /// Held back by a full publish window (counted once per wait).
    window_full: bool,
}

impl<S: Io> Running<S> {
    fn new(conn: Rc<Conn>, r: ReadHalf<S>, w: WriteHalf<S>, buf: BytesMut) -> Self {
        let limits = &conn.ctx.limits;
        let dec = wsp::Decoder::new(
            Role::Server,
            wsp::Limits {
                frame_bytes_max: limits.frame_bytes_max,
                message_bytes_max: limits.frame_bytes_max,
            },
        );
        let cfg = conn.ctx.shard.config();
        let dlim = DecodeLimits {
            payload_bytes_max: cfg.message_bytes_max,
            name_bytes_max: cfg.name_bytes_max,
            batch_items_max: 1,
        };
        Self {
            conn,
            r,
            w,
            buf,
            dec,
            dlim,
            out: Flusher::new(false),
            wait: None,
            phase: Phase::Reading,
            window_full: false,
        }
    }

    /// Reads and drops input until the client closes, the socket fails or the linger time
    /// passes. A client that keeps sending gets [`LINGER_READS_PER_POLL`] reads per wake-up
    /// (then the task yields) and the linger time in all.
    fn linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Phase::Lingering(timer) = &mut self.phase else {
            return Poll::Ready(());
        };
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        for _ in 0..LINGER_READS_PER_POLL {
            self.buf.clear();
            match poll_read_some(cx, &mut self.r, &mut self.buf, &self.conn.ctx.stats) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                // Woken by input or by the timer (polled above).
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // Output first: what is queued goes out (acks and items of this turn together).
            if self.out.poll_flush(cx, &self.conn, &mut self.w).is_ready() {
                // The last bytes are out, or the socket failed: the session is over once the
                // client stopped sending (or the linger time passed).
                if matches!(self.phase, Phase::Reading | Phase::Draining(_)) {
                    self.conn.unsubscribe_all();
                }
                if !matches!(self.phase, Phase::Lingering(_)) {
                    self.phase = Phase::Lingering(Box::pin(glommio::timer::Timer::new(LINGER)));
                }
                return self.linger(cx);
            }
            match &mut self.phase {
                Phase::Reading => match self.read(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Read::End) => {
                        if !self.conn.is_closing() {
                            self.conn.close_with(Bytes::new());
                        }
                        self.conn.unsubscribe_all();
                        self.phase = Phase::Ending(None);
                    }
                    Poll::Ready(Read::Stop) => {
                        // Every publish the client sent before the close is answered:
                        // requests already read are refused `ShuttingDown`, and those in
                        // flight get their ack (or refusal) before the close frame.
                        refuse_buffered(&self.conn, &mut self.dec, &mut self.buf, &self.dlim);
                        let drain = self.conn.ctx.shard.config().drain_timeout;
                        self.phase = Phase::Draining(Box::pin(glommio::timer::Timer::new(drain)));
                    }
                },
                Phase::Draining(deadline) => {
                    if self.conn.publishes_in_flight.get() > 0
                        && deadline.as_mut().poll(cx).is_pending()
                    {
                        self.conn.wait_reader(cx.waker());
                        return Poll::Pending;
                    }
                    self.conn
                        .close_with(WS.goodbye(close_code::GOING_AWAY, "server shutting down"));
                    self.conn.unsubscribe_all();
                    if let Phase::Draining(d) =
                        std::mem::replace(&mut self.phase, Phase::Ending(None))
                    {
                        self.phase = Phase::Ending(Some(d));
                    }
                }
                Phase::Lingering(_) => return self.linger(cx),
                Phase::Ending(deadline) => {
                    // The output (polled above) is not done yet.
                    if let Some(d) = deadline {
                        if d.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(());
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads and answers messages until reading must wait (`Pending`, wakers registered) or
    /// is over.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        let conn = &self.conn;
        // Once per wake-up, not per message: a shutdown is seen at the next one. The shard's
        // sweep sets the flag and wakes every connection (no shutdown future per connection).
        if conn.ctx.stopping.get() {
            return Poll::Ready(Read::Stop);
        }
        // When the bytes being decoded were read (taken at the first message they hold).
        let mut read_at: Option<Instant> = None;
        loop {
            if let Some(f) = &mut self.wait {
                match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(true) => self.wait = None,
                    Poll::Ready(false) => return Poll::Ready(Read::End),
                }
            }
            if conn.is_closing() {
                return Poll::Ready(Read::End);
            }
            // Backpressure: take no more requests while their answers are not being read, or
            // while the publish window is full.
            if !conn.has_room() {
                conn.wait_reader(cx.waker());
                return Poll::Pending;
            }
            if conn.publishes_in_flight.get() >= conn.ctx.limits.publishes_in_flight_max {
                if !self.window_full {
                    self.window_full = true;
                    metrics::inc(&conn.ctx.stats.limit_publish_window);
                }
                conn.wait_reader(cx.waker());
                return Poll::Pending;
            }
            self.window_full = false;
            match self.dec.decode(&mut self.buf) {
                Ok(Some(m)) => {
                    conn.partial_since.set(None);
                    // One clock reading for every message of one socket read.
                    let now = *read_at.get_or_insert_with(Instant::now);
                    let moment = Moment::from(now);
                    conn.last_alive.set(moment);
                    if !matches!(m, Message::Pong(_)) {
                        conn.last_input.set(moment);
                    }
                    // Answered synchronously; only the rare requests that wait (token checks)
                    // come back as a boxed future.
                    match on_message(conn, m, &self.dlim, conn.peer, now) {
                        Step::Go => {}
                        Step::End => return Poll::Ready(Read::End),
                        Step::Wait(f) => self.wait = Some(f),
                    }
                    continue;
                }
                Ok(None) => {
                    // In the middle of a message: the sweep holds it to `message_timeout`.
                    let partial = self.dec.assembling() || !self.buf.is_empty();
                    match (partial, conn.partial_since.get()) {
                        (true, None) => conn.partial_since.set(Some(Moment::now())),
                        (false, Some(_)) => conn.partial_since.set(None),
                        _ => {}
                    }
                }
                Err(e) => {
                    metrics::inc(&conn.ctx.stats.protocol_errors);
                    if e.close_code() == close_code::TOO_BIG {
                        metrics::inc(&conn.ctx.stats.limit_message_size);
                    }
                    conn.close_because(e.close_code(), &e.to_string());
                    return Poll::Ready(Read::End);
                }
            }
            // No timer here: the shard's keepalive sweep closes idle or dead connections, and
            // closing wakes this task (through the output's waker, registered whenever the
            // queue is empty; with output blocked, the socket's write timeout bounds it).
            match poll_read_some(cx, &mut self.r, &mut self.buf, &conn.ctx.stats) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Read::End),
                Poll::Ready(Ok(_)) => read_at = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
