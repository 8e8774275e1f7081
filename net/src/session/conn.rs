//! A client connection's shared state: its subscriptions, its token, and its bounded send
//! queue, which the engine fills (the connection is the [`Sink`] of all its subscriptions) and
//! the connection's own task drains to the socket through its `Flusher` (`flush.rs`; HTTP/2
//! takes it in `transport/h2.rs`). Also the connection's periodic checks, run by the shard's
//! sweep ([`Tracked`]).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_core::{
    Accept, CloseReason, Delivery, Offer, PresenceOptions, Sink, Start, SubId, SubscribeAccepted,
    SubscribeError, TopicKey,
};
use fanfare_proto::message::ErrorCode;
use fanfare_proto::{ws as wsp, ServerMsg};

use crate::access::permits;
use crate::auth::{Grant, Right};
use crate::ctx::{NetCtx, Tracked};
use crate::metrics;
use crate::moment::Moment;
use crate::session::encoder::Encoder;
pub(crate) use crate::session::queue::Frame;
use crate::session::queue::FrameQueue;
use crate::session::subs::{SubEntry, Subs};

/// Most bytes one write carries.
pub(crate) const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

#[derive(Default)]
struct Out {
    frames: FrameQueue,
    bytes: usize,
    waker: Option<Waker>,
    /// Set when the connection is ending: the writer sends what is queued, then this.
    closing: Option<Box<Bytes>>,
    /// Subscriptions that were refused an item; told `drained` when the queue empties.
    lagging: Vec<SubId>,
    lag_since: Option<Moment>,
    /// The writer is gone: offers are answered `Gone`.
    done: bool,
}

/// One client connection's shared state: its subscriptions and its send queue.
pub(crate) struct Conn {
    pub ctx: Rc<NetCtx>,
    /// How its events go on the wire.
    pub enc: &'static dyn Encoder,
    /// The protocol it came over (`ws`, `http/1.1`, `h2`), for logs.
    pub transport: &'static str,
    /// The client's address (for logs).
    pub peer: std::net::IpAddr,
    out: RefCell<Out>,
    subs: RefCell<Subs>,
    /// The subscribe request being made (its events can arrive before `subscribe` returns).
    pending: RefCell<Option<Box<(u64, TopicKey)>>>,
    pub publishes_in_flight: Cell<usize>,
    /// The reading side's waker: woken when it may go on (the queue has room again, a
    /// publish slot is free, the connection is closing). One task reads a connection.
    reader: RefCell<Option<Waker>>,
    /// Last application message from the client (drives the idle timeout).
    pub last_input: Cell<Moment>,
    /// Last bytes of any kind from the client, pongs included (drives pings).
    pub last_alive: Cell<Moment>,
    pub ping_sent: Cell<Option<Moment>>,
    /// Since when the client has been in the middle of a message (a frame cut short, or the
    /// first fragments of one); the sweep holds it to `message_timeout`.
    pub partial_since: Cell<Option<Moment>>,
    /// When the connection was made (a WebSocket must authenticate within the handshake time).
    created: Moment,
    /// The token in force (authentication on), when its time runs out, and, once the
    /// client was told it expired, when the connection closes unless it refreshes.
    grant: RefCell<Option<Arc<Grant>>>,
    token_expires: Cell<Option<Moment>>,
    grace_until: Cell<Option<Moment>>,
}

impl Conn {
    pub fn new(
        ctx: Rc<NetCtx>,
        enc: &'static dyn Encoder,
        transport: &'static str,
        peer: std::net::IpAddr,
    ) -> Rc<Self> {
        let conn = Rc::new(Self {
            ctx: ctx.clone(),
            enc,
            transport,
            peer,
            out: RefCell::new(Out::default()),
            subs: RefCell::new(Subs::default()),
            pending: RefCell::new(None),
            publishes_in_flight: Cell::new(0),
            reader: RefCell::new(None),
            last_input: Cell::new(Moment::now()),
            last_alive: Cell::new(Moment::now()),
            ping_sent: Cell::new(None),
            partial_since: Cell::new(None),
            created: Moment::now(),
            grant: RefCell::new(None),
            token_expires: Cell::new(None),
            grace_until: Cell::new(None),
        });
        let tracked: Rc<dyn Tracked> = conn.clone();
        ctx.track(Rc::downgrade(&tracked));
        conn
    }

    /// Whether the send queue is within its limit (or the connection is ending): the reader
    /// takes requests only then (control frames, acks and errors, are always queued, so
    /// the reader must not take more requests while their answers pile up unread).
    pub fn has_room(&self) -> bool {
        let out = self.out.borrow();
        out.bytes <= self.ctx.limits.send_queue_bytes_max || out.done || out.closing.is_some()
    }

    /// Registers the reading task's waker (see the `reader` field).
    pub fn wait_reader(&self, waker: &Waker) {
        set_waker(&mut self.reader.borrow_mut(), waker);
    }

    /// Puts a verified token in force (first one or a refresh).
    pub fn set_grant(&self, g: Arc<Grant>) {
        self.token_expires
            .set(Some((Instant::now() + g.remaining()).into()));
        self.grace_until.set(None);
        *self.grant.borrow_mut() = Some(g);
    }

    /// The token in force, if any.
    pub fn grant(&self) -> Option<Arc<Grant>> {
        self.grant.borrow().clone()
    }

    /// Whether the token is past its expiry (the connection is in its grace period).
    pub fn token_expired(&self) -> bool {
        self.token_expires
            .get()
            .is_some_and(|t| Instant::now() >= t.instant())
    }

    /// Checks a publish or subscribe against the token in force; on success, the subject to
    /// stamp on published items.
    pub fn permit(
        &self,
        ns: &str,
        topic: &str,
        right: Right,
    ) -> Result<Option<Arc<str>>, (ErrorCode, String)> {
        if !self.ctx.auth_on() {
            permits(&self.ctx, None, ns, topic, right)?;
            return Ok(None);
        }
        let grant = self.grant.borrow();
        if grant.is_some() && self.token_expired() {
            return Err((
                ErrorCode::TokenExpired,
                "token expired: send RefreshToken".into(),
            ));
        }
        permits(&self.ctx, grant.as_deref(), ns, topic, right)?;
        Ok(grant.as_ref().map(|g| g.subject.clone()))
    }

    /// Subscriptions whose topic the token in force no longer grants (after a refresh).
    pub fn subs_not_granted(&self) -> Vec<(SubId, u64)> {
        let Some(g) = self.grant() else {
            return Vec::new();
        };
        self.subs
            .borrow()
            .iter()
            .filter(|(_, e)| !g.allows(e.topic.namespace(), e.topic.topic(), Right::Subscribe))
            .map(|(id, e)| (*id, e.wire))
            .collect()
    }

    fn wake_reader(&self) {
        // Taken first: the wake may run nothing now, but never under the borrow.
        let w = self.reader.borrow_mut().take();
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Resolves once the connection is closing (cheap: no timer).
    pub fn closing_signal(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_closing() {
                Poll::Ready(())
            } else {
                self.wait_reader(cx.waker());
                Poll::Pending
            }
        })
    }

    /// Queues a control frame (never refused: at most a few per request or subscription).
    pub fn push(&self, frame: Bytes) {
        // A frame built for the queue is a `Vec` in `Bytes`: taken back without a copy.
        self.push_frame(Frame::Own(Vec::from(frame)));
    }

    fn push_frame(&self, frame: Frame) {
        let mut out = self.out.borrow_mut();
        if out.done || out.closing.is_some() {
            return;
        }
        out.bytes += frame.len();
        out.frames.push(frame);
        if let Some(w) = out.waker.take() {
            w.wake();
        }
    }

    /// Queues a server message as a control frame (when the connection's encoding has a form
    /// for it).
    pub fn send(&self, msg: &ServerMsg) {
        let f = self.enc.control_frame(&mut self.ctx.fbb.borrow_mut(), msg);
        if let Some(f) = f {
            self.push_frame(f);
        }
    }

    /// Ends the connection for a reason worth an operator's attention (a limit, a protocol
    /// error, authentication): one log line, then the mode's goodbye with `code` and `reason`.
    pub fn close_because(&self, code: u16, reason: &str) {
        if self.is_closing() {
            return;
        }
        tracing::info!(
            peer = %self.peer,
            transport = self.transport,
            encoding = self.enc.name(),
            reason,
            "closing connection"
        );
        self.close_with(self.enc.goodbye(code, reason));
    }

    /// Starts ending the connection: the writer sends what is queued, then `last`.
    pub fn close_with(&self, last: Bytes) {
        let mut out = self.out.borrow_mut();
        if out.closing.is_none() {
            out.closing = Some(Box::new(last));
        }
        if let Some(w) = out.waker.take() {
            w.wake();
        }
        drop(out);
        self.wake_reader();
    }

    pub fn is_closing(&self) -> bool {
        let out = self.out.borrow();
        out.closing.is_some() || out.done
    }

    pub fn subscription_count(&self) -> usize {
        self.subs.borrow().len()
    }

    pub fn has_topic(&self, key: &TopicKey) -> bool {
        self.subs.borrow().values().any(|s| s.topic == *key)
    }

    pub fn wire_to_sub(&self, wire: u64) -> Option<SubId> {
        self.subs
            .borrow()
            .iter()
            .find(|(_, e)| e.wire == wire)
            .map(|(id, _)| *id)
    }

    /// Subscribes through the engine, recording the subscription under its wire id.
    pub fn subscribe(
        self: &Rc<Self>,
        request_id: u64,
        key: TopicKey,
        start: Start,
        presence: PresenceOptions,
    ) -> Result<SubscribeAccepted, SubscribeError> {
        *self.pending.borrow_mut() = Some(Box::new((request_id, key.clone())));
        let r = self
            .ctx
            .shard
            .subscribe_with(key, start, self.clone(), presence);
        // Still pending: the owner is on another shard and its answer comes later.
        if let (Ok(acc), Some(p)) = (&r, self.pending.borrow_mut().take()) {
            let (rid, t) = *p;
            self.subs.borrow_mut().insert(
                acc.sub,
                SubEntry {
                    wire: acc.topic.0,
                    request_id: rid,
                    topic: t,
                },
            );
        }
        r
    }

    /// The wire id and request id of `sub`; `topic` (from `Subscribed`) registers a
    /// subscription whose events arrived before `subscribe` returned.
    fn entry(&self, sub: SubId, topic: Option<u64>) -> Option<(u64, u64)> {
        if let Some(e) = self.subs.borrow().get(&sub) {
            return Some((e.wire, e.request_id));
        }
        let (rid, t) = *self.pending.borrow_mut().take()?;
        match topic {
            Some(wire) => {
                self.subs.borrow_mut().insert(
                    sub,
                    SubEntry {
                        wire,
                        request_id: rid,
                        topic: t,
                    },
                );
                Some((wire, rid))
            }
            None => Some((0, rid)),
        }
    }

    pub fn remove_sub(&self, sub: SubId) {
        self.subs.borrow_mut().remove(&sub);
    }

    /// Unsubscribes everything (the connection is ending).
    pub fn unsubscribe_all(&self) {
        let subs: Vec<SubId> = self.subs.borrow_mut().drain().map(|(k, _)| k).collect();
        for s in subs {
            self.ctx.shard.unsubscribe(s);
        }
    }

    /// Takes a publish slot (the reader waits while `publishes_in_flight` is at its limit
    /// before reading the request that takes it).
    pub fn take_publish_slot(&self) {
        self.publishes_in_flight
            .set(self.publishes_in_flight.get() + 1);
    }

    pub fn publish_done(&self) {
        self.publishes_in_flight
            .set(self.publishes_in_flight.get().saturating_sub(1));
        self.wake_reader();
    }

    /// The time the connection has been lagging, if it is.
    pub fn lagging_for(&self, now: Instant) -> Option<Duration> {
        self.out.borrow().lag_since.map(|t| t.until(now))
    }

    fn offer_item(&self, sub: SubId, d: &Delivery<'_>) -> Accept {
        let ctx = &self.ctx;
        let enc = self.enc;
        let frame = d.encoded(enc.slot(), |topic, m| {
            ctx.record_latency(m.published_at, d.now);
            metrics::inc(enc.encodes(&ctx.stats));
            enc.item(topic.0, m)
        });
        let mut out = self.out.borrow_mut();
        if out.bytes + frame.len() > ctx.limits.send_queue_bytes_max && !out.frames.is_empty() {
            if out.lagging.is_empty() {
                metrics::inc(&ctx.stats.slow_events);
                out.lag_since = Some(Moment::now());
            }
            out.lagging.push(sub);
            return Accept::Full;
        }
        out.bytes += frame.len();
        out.frames.push(Frame::Shared(frame));
        if let Some(w) = out.waker.take() {
            w.wake();
        }
        metrics::inc(&ctx.stats.deliveries);
        Accept::Queued
    }
}

impl Sink for Conn {
    fn prefetch(&self) {
        // An offer reads the connection's fields, its queue (`out`) among them: the whole
        // struct (360 bytes today, six lines). Bounded so a larger struct one day does not
        // turn into a long loop.
        crate::memory::prefetch_value(self, 512);
    }

    fn prefetch_queue(&self) {
        // The fields are in cache by now (`prefetch`, a few subscribers back): where the
        // frame will be stored, when that is the deque's buffer.
        if let Ok(out) = self.out.try_borrow() {
            if let Some(slot) = out.frames.next_slot() {
                crate::memory::prefetch(slot.cast(), std::mem::size_of::<Frame>());
            }
        }
    }

    fn offer(&self, sub: SubId, offer: Offer<'_>) -> Accept {
        if self.out.borrow().done {
            return Accept::Gone;
        }
        let wire = |s: &Self| s.entry(sub, None);
        match offer {
            Offer::Item(d) => return self.offer_item(sub, d),
            Offer::Subscribed {
                topic,
                epoch,
                next_seq,
                member,
            } => {
                let Some((_, request_id)) = self.entry(sub, Some(topic.0)) else {
                    return Accept::Gone;
                };
                self.send(&ServerMsg::Subscribed {
                    request_id,
                    subscription_id: topic.0,
                    epoch: epoch.0,
                    next_seq: next_seq.0,
                    member_id: member.map_or(0, |m| m.0),
                });
            }
            Offer::Presence(ev) => {
                let Some((wire, _)) = wire(self) else {
                    return Accept::Gone;
                };
                metrics::inc(&self.ctx.stats.presence_events_out);
                self.send(&ServerMsg::PresenceEvent {
                    subscription_id: wire,
                    event: crate::presence::event_msg(ev),
                });
            }
            Offer::Discontinuity {
                last_seq,
                new_seq,
                new_epoch,
            } => {
                let Some((wire, _)) = wire(self) else {
                    return Accept::Gone;
                };
                self.send(&ServerMsg::Discontinuity {
                    subscription_id: wire,
                    last_seq: last_seq.0,
                    new_seq: new_seq.0,
                    new_epoch: new_epoch.0,
                });
            }
            Offer::Heartbeat { epoch, next_seq } => {
                let Some((wire, _)) = wire(self) else {
                    return Accept::Gone;
                };
                if self.out.borrow().bytes >= self.ctx.limits.send_queue_bytes_max {
                    return Accept::Full;
                }
                self.send(&ServerMsg::Heartbeat {
                    subscription_id: wire,
                    epoch: epoch.0,
                    next_seq: next_seq.0,
                });
            }
            Offer::Closed(reason) => {
                let Some((wire, request_id)) = wire(self) else {
                    return Accept::Gone;
                };
                self.remove_sub(sub);
                let (code, text) = close_code(reason);
                self.send(&match reason {
                    CloseReason::Failed(_) => ServerMsg::Error {
                        request_id,
                        code,
                        text,
                    },
                    _ => ServerMsg::SubscriptionClosed {
                        subscription_id: wire,
                        code,
                        text,
                    },
                });
                if self.enc.one_subscription() {
                    self.close_with(Bytes::new());
                }
            }
            _ => {}
        }
        Accept::Queued
    }

    fn drains_itself(&self) -> bool {
        true
    }
}

/// The error code and text for a subscription's end.
pub(crate) fn close_code(reason: &CloseReason) -> (ErrorCode, String) {
    let code = match reason {
        CloseReason::Failed(e) => e.code(),
        CloseReason::ShuttingDown => ErrorCode::ShuttingDown,
        CloseReason::TooSlow(_) => ErrorCode::Overloaded,
        _ => ErrorCode::Unknown,
    };
    (code, reason.to_string())
}

// -------------------------------------------------------------------- the writer

/// What a writer takes from a connection's queue next.
pub(crate) enum Next {
    /// Frames to send, in order.
    Frames(Vec<Frame>),
    /// The connection is ending: send these last bytes (maybe empty) and stop.
    Last(Bytes),
}

/// What [`Conn::take_into`] found.
pub(crate) enum Taken {
    /// Frames to write are in the buffer.
    Frames,
    /// One frame to write (not copied).
    One(Frame),
    /// The connection is ending: its last bytes (maybe none) are in the buffer.
    Last,
    /// Nothing is queued; the waker is registered.
    Empty,
}

/// Stores `waker` in `slot` unless the one there wakes the same task.
fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        s => *s = Some(waker.clone()),
    }
}

impl Out {
    /// How many queued frames make the next write, and their bytes.
    fn next_write(&self) -> (usize, usize) {
        let (mut k, mut n) = (0, 0);
        for f in self.frames.iter() {
            if n > 0 && n + f.len() > WRITE_BATCH_BYTES_MAX {
                break;
            }
            n += f.len();
            k += 1;
        }
        (k, n)
    }
}

impl Conn {
    /// Waits for the next batch: everything queued, up to a write's worth.
    pub(crate) async fn next_batch(&self) -> Next {
        std::future::poll_fn(|cx| {
            let mut out = self.out.borrow_mut();
            if out.frames.is_empty() {
                if let Some(last) = out.closing.take() {
                    return Poll::Ready(Next::Last(*last));
                }
                set_waker(&mut out.waker, cx.waker());
                return Poll::Pending;
            }
            let (k, n) = out.next_write();
            let batch = (0..k).filter_map(|_| out.frames.pop()).collect();
            out.bytes -= n;
            Poll::Ready(Next::Frames(batch))
        })
        .await
    }

    /// Moves the next write's worth of queued frames into `buf` (as one HTTP chunk when
    /// `chunked`; a lone frame is handed over as it is); once the queue is empty and the connection is ending, its last bytes (with
    /// the chunked body's end); with nothing queued, registers `waker`.
    pub(crate) fn take_into(&self, buf: &mut Vec<u8>, chunked: bool, waker: &Waker) -> Taken {
        let mut out = self.out.borrow_mut();
        if out.frames.is_empty() {
            let Some(last) = out.closing.take() else {
                set_waker(&mut out.waker, waker);
                return Taken::Empty;
            };
            if chunked {
                if !last.is_empty() {
                    chunk_head(buf, last.len());
                    buf.extend_from_slice(&last);
                    buf.extend_from_slice(b"\r\n");
                }
                buf.extend_from_slice(b"0\r\n\r\n");
            } else {
                buf.extend_from_slice(&last);
            }
            return Taken::Last;
        }
        let (k, n) = out.next_write();
        if k == 1 && !chunked {
            if let Some(f) = out.frames.pop() {
                out.bytes -= n;
                if f.held().is_some() {
                    return Taken::One(f);
                }
                f.put(buf);
                return Taken::Frames;
            }
        }
        if chunked {
            chunk_head(buf, n);
        }
        for _ in 0..k {
            if let Some(f) = out.frames.pop() {
                f.put(buf);
            }
        }
        if chunked {
            buf.extend_from_slice(b"\r\n");
        }
        out.bytes -= n;
        Taken::Frames
    }

    /// Gives back what an idle connection's queue holds (its capacity), from the sweep, so
    /// a burst does not stay in every connection's memory.
    fn compact(&self) {
        let mut out = self.out.borrow_mut();
        out.frames.compact();
        if out.lagging.is_empty() && out.lagging.capacity() > 0 {
            out.lagging = Vec::new();
        }
    }

    /// After a write: counts it, and when the queue has room again lets lagging
    /// subscriptions catch up.
    pub(crate) fn wrote(&self, bytes: usize) {
        metrics::inc(&self.ctx.stats.writes);
        metrics::add(&self.ctx.stats.bytes_out, bytes as u64);
        let drained = {
            let mut out = self.out.borrow_mut();
            if !out.lagging.is_empty() && out.bytes <= self.ctx.limits.send_queue_bytes_max / 2 {
                out.lag_since = None;
                std::mem::take(&mut out.lagging)
            } else {
                Vec::new()
            }
        };
        for sub in drained {
            self.ctx.shard.drained(sub);
        }
        self.wake_reader();
    }

    /// The writer is gone: later offers are answered `Gone`.
    pub(crate) fn writer_done(&self) {
        {
            let mut out = self.out.borrow_mut();
            out.done = true;
            out.frames.clear();
            out.bytes = 0;
        }
        self.wake_reader();
    }
}

impl Tracked for Conn {
    fn keepalive(&self, now: Instant) {
        keepalive(self, now);
    }

    fn stop(&self) {
        self.wake_reader();
        let w = self.out.borrow_mut().waker.take();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// An HTTP/1.1 chunk's head for `n` bytes.
fn chunk_head(buf: &mut Vec<u8>, n: usize) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{n:x}\r\n");
}

/// Periodic checks: the slow deadline, pings and pong timeouts.
fn keepalive(conn: &Conn, now: Instant) {
    conn.compact();
    let limits = conn.ctx.limits.clone();
    if conn.is_closing() {
        return;
    }
    if conn.ctx.auth_on() && !token_check(conn, now) {
        return;
    }
    if conn
        .lagging_for(now)
        .is_some_and(|d| d > limits.slow_deadline)
    {
        metrics::inc(&conn.ctx.stats.closed_slow);
        conn.close_because(
            wsp::close_code::POLICY,
            "too slow: send queue full past the deadline",
        );
        return;
    }
    if !conn.enc.pings() {
        return;
    }
    if conn
        .partial_since
        .get()
        .is_some_and(|t| t.until(now) > limits.message_timeout)
    {
        metrics::inc(&conn.ctx.stats.limit_message_time);
        conn.close_because(wsp::close_code::POLICY, "message not completed in time");
        return;
    }
    if conn.subscription_count() == 0 && conn.last_input.get().until(now) >= limits.idle_timeout {
        metrics::inc(&conn.ctx.stats.limit_idle);
        conn.close_because(wsp::close_code::POLICY, "idle timeout");
        return;
    }
    match conn.ping_sent.get() {
        Some(t) if t.until(now) > limits.pong_timeout => {
            metrics::inc(&conn.ctx.stats.limit_pong);
            conn.close_because(wsp::close_code::POLICY, "pong timeout");
        }
        Some(_) => {}
        None if conn.last_alive.get().until(now) >= limits.ping_interval => {
            conn.ping_sent.set(Some(now.into()));
            conn.push(wsp::encode_server_frame(wsp::Opcode::Ping, b"fanfare"));
        }
        None => {}
    }
}

/// Token time limits (authentication on); `false` when the connection is now closing.
fn token_check(conn: &Conn, now: Instant) -> bool {
    let ctx = &conn.ctx;
    if conn.grant.borrow().is_none() {
        // HTTP streams are authenticated before they exist; a WebSocket may authenticate in
        // its first message, within the handshake time.
        if !conn.enc.one_subscription() && conn.created.until(now) >= ctx.limits.handshake_timeout {
            metrics::inc(&ctx.stats.auth_failures_timeout);
            conn.send(&ServerMsg::Error {
                request_id: 0,
                code: ErrorCode::Unauthorized,
                text: "no token within the handshake time".into(),
            });
            conn.close_because(wsp::close_code::POLICY, "authentication timeout");
            return false;
        }
        return true;
    }
    match (conn.token_expires.get(), conn.grace_until.get()) {
        (_, Some(until)) if now >= until.instant() => {
            metrics::inc(&ctx.stats.auth_expired_closed);
            conn.close_because(wsp::close_code::POLICY, "token expired");
            false
        }
        (Some(exp), None) if now >= exp.instant() => {
            let grace = ctx.auth.cfg.expiry_grace;
            conn.grace_until.set(Some((now + grace).into()));
            let text = format!(
                "token expired: refresh within {} s or the connection closes",
                grace.as_secs()
            );
            conn.send(&ServerMsg::Error {
                request_id: 0,
                code: ErrorCode::TokenExpired,
                text,
            });
            true
        }
        _ => true,
    }
}
