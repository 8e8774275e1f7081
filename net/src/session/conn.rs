//! A client connection's shared state: its subscriptions, its token, and its bounded send
//! queue, which the engine fills (the connection is the [`Sink`] of all its subscriptions) and
//! a writer drains (`writer.rs`). Also the connection's periodic checks, run by the
//! shard's sweep ([`Tracked`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare_core::{
    Accept, CloseReason, Delivery, Encoded, Offer, PresenceOptions, Sink, Start, SubId,
    SubscribeAccepted, SubscribeError, TopicKey,
};
use fanfare_proto::message::ErrorCode;
use fanfare_proto::{ws as wsp, ServerMsg};

use crate::access::permits;
use crate::auth::{Grant, Right};
use crate::ctx::{NetCtx, Tracked};
use crate::metrics;
use crate::session::encoder::Encoder;

/// Most bytes one write carries.
pub(crate) const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// A queued frame: a fan-out item whose buffer every subscriber on the shard shares, or one
/// of the connection's own control frames (acks, pongs, errors: no extra allocation).
pub(crate) enum Frame {
    Shared(Encoded),
    Own(Bytes),
}

impl std::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Frame::Shared(e) => e,
            Frame::Own(b) => b,
        }
    }
}

impl Frame {
    /// The frame as `Bytes` (for HTTP/2, whose DATA frames take `Bytes`).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Frame::Shared(e) => Bytes::clone(e),
            Frame::Own(b) => b.clone(),
        }
    }
}

struct SubEntry {
    wire: u64,
    request_id: u64,
    topic: TopicKey,
}

/// A connection's subscriptions. Most connections have one or a few, so a vector sized to fit
/// (no hash table, no hasher state: part of what an idle connection costs, docs/ARCHITECTURE.md);
/// lookups are linear, bounded by `subscriptions_per_connection_max`, and off the item path.
#[derive(Default)]
struct Subs(Vec<(SubId, SubEntry)>);

impl Subs {
    fn insert(&mut self, id: SubId, e: SubEntry) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == id) {
            slot.1 = e;
            return;
        }
        if self.0.len() == self.0.capacity() && self.0.len() < 4 {
            self.0.reserve_exact(1);
        }
        self.0.push((id, e));
    }

    fn get(&self, id: &SubId) -> Option<&SubEntry> {
        self.0.iter().find(|(k, _)| k == id).map(|(_, e)| e)
    }

    fn remove(&mut self, id: &SubId) -> Option<SubEntry> {
        let i = self.0.iter().position(|(k, _)| k == id)?;
        Some(self.0.swap_remove(i).1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&SubId, &SubEntry)> {
        self.0.iter().map(|(k, e)| (k, e))
    }

    fn values(&self) -> impl Iterator<Item = &SubEntry> {
        self.0.iter().map(|(_, e)| e)
    }

    fn drain(&mut self) -> impl Iterator<Item = (SubId, SubEntry)> + '_ {
        self.0.drain(..)
    }
}

#[derive(Default)]
struct Out {
    frames: VecDeque<Frame>,
    bytes: usize,
    waker: Option<Waker>,
    /// Set when the connection is ending: the writer sends what is queued, then this.
    closing: Option<Bytes>,
    /// Subscriptions that were refused an item; told `drained` when the queue empties.
    lagging: Vec<SubId>,
    lag_since: Option<Instant>,
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
    pending: RefCell<Option<(u64, TopicKey)>>,
    pub publishes_in_flight: Cell<usize>,
    publish_waker: RefCell<Option<Waker>>,
    /// Last application message from the client (drives the idle timeout).
    pub last_input: Cell<Instant>,
    /// Last bytes of any kind from the client, pongs included (drives pings).
    pub last_alive: Cell<Instant>,
    pub ping_sent: Cell<Option<Instant>>,
    /// Since when the client has been in the middle of a message (a frame cut short, or the
    /// first fragments of one); the sweep holds it to `message_timeout`.
    pub partial_since: Cell<Option<Instant>>,
    /// Woken when the connection starts closing (the reader waits on it beside its read).
    closed_waker: RefCell<Option<Waker>>,
    /// Woken when the writer makes room (or ends), for a reader held back by a full queue.
    room_waker: RefCell<Option<Waker>>,
    /// When the connection was made (a WebSocket must authenticate within the handshake time).
    created: Instant,
    /// The token in force (authentication on), when its time runs out, and, once the
    /// client was told it expired, when the connection closes unless it refreshes.
    grant: RefCell<Option<Arc<Grant>>>,
    token_expires: Cell<Option<Instant>>,
    grace_until: Cell<Option<Instant>>,
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
            publish_waker: RefCell::new(None),
            last_input: Cell::new(Instant::now()),
            last_alive: Cell::new(Instant::now()),
            ping_sent: Cell::new(None),
            partial_since: Cell::new(None),
            closed_waker: RefCell::new(None),
            room_waker: RefCell::new(None),
            created: Instant::now(),
            grant: RefCell::new(None),
            token_expires: Cell::new(None),
            grace_until: Cell::new(None),
        });
        let tracked: Rc<dyn Tracked> = conn.clone();
        ctx.track(Rc::downgrade(&tracked));
        conn
    }

    /// Backpressure on requests: resolves once the send queue is within its limit (or the
    /// connection is ending). Control frames (acks, pongs, errors) are always queued, so the
    /// reader must not take more requests while their answers pile up unread.
    pub async fn wait_for_room(&self) {
        let max = self.ctx.limits.send_queue_bytes_max;
        std::future::poll_fn(|cx| {
            let out = self.out.borrow();
            if out.bytes <= max || out.done || out.closing.is_some() {
                Poll::Ready(())
            } else {
                *self.room_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Puts a verified token in force (first one or a refresh).
    pub fn set_grant(&self, g: Arc<Grant>) {
        self.token_expires.set(Some(Instant::now() + g.remaining()));
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
            .is_some_and(|t| Instant::now() >= t)
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

    fn wake_room(&self) {
        if let Some(w) = self.room_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once the connection is closing (cheap: no timer).
    pub fn closing_signal(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_closing() {
                Poll::Ready(())
            } else {
                *self.closed_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Queues a control frame (never refused: at most a few per request or subscription).
    pub fn push(&self, frame: Bytes) {
        let mut out = self.out.borrow_mut();
        if out.done || out.closing.is_some() {
            return;
        }
        out.bytes += frame.len();
        out.frames.push_back(Frame::Own(frame));
        if let Some(w) = out.waker.take() {
            w.wake();
        }
    }

    /// Queues a server message as a control frame (when the connection's encoding has a form
    /// for it).
    pub fn send(&self, msg: &ServerMsg) {
        let f = self.enc.control(&mut self.ctx.fbb.borrow_mut(), msg);
        if let Some(f) = f {
            self.push(f);
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
            out.closing = Some(last);
        }
        if let Some(w) = out.waker.take() {
            w.wake();
        }
        drop(out);
        if let Some(w) = self.closed_waker.borrow_mut().take() {
            w.wake();
        }
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
        *self.pending.borrow_mut() = Some((request_id, key.clone()));
        let r = self
            .ctx
            .shard
            .subscribe_with(key, start, self.clone(), presence);
        // Still pending: the owner is on another shard and its answer comes later.
        if let (Ok(acc), Some((rid, t))) = (&r, self.pending.borrow_mut().take()) {
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
        let (rid, t) = self.pending.borrow_mut().take()?;
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

    /// Waits until fewer than the limit of publishes (and presence queries) are in flight; the
    /// reader calls it before taking the next request, then [`Conn::take_publish_slot`].
    pub async fn publish_slot_free(&self) {
        let max = self.ctx.limits.publishes_in_flight_max;
        if self.publishes_in_flight.get() >= max {
            metrics::inc(&self.ctx.stats.limit_publish_window);
        }
        std::future::poll_fn(|cx| {
            if self.publishes_in_flight.get() < max {
                Poll::Ready(())
            } else {
                *self.publish_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Takes a publish slot (the reader waited for one with [`Conn::publish_slot_free`] before
    /// reading the request that takes it).
    pub fn take_publish_slot(&self) {
        self.publishes_in_flight
            .set(self.publishes_in_flight.get() + 1);
    }

    pub fn publish_done(&self) {
        self.publishes_in_flight
            .set(self.publishes_in_flight.get().saturating_sub(1));
        if let Some(w) = self.publish_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The time the connection has been lagging, if it is.
    pub fn lagging_for(&self, now: Instant) -> Option<Duration> {
        self.out
            .borrow()
            .lag_since
            .map(|t| now.saturating_duration_since(t))
    }

    fn offer_item(&self, sub: SubId, d: &Delivery<'_>) -> Accept {
        let ctx = &self.ctx;
        let enc = self.enc;
        let frame = d.encoded(enc.slot(), |topic, m| {
            ctx.record_latency(m.published_at);
            metrics::inc(enc.encodes(&ctx.stats));
            enc.item(&mut ctx.fbb.borrow_mut(), topic.0, m)
        });
        let mut out = self.out.borrow_mut();
        if out.bytes + frame.len() > ctx.limits.send_queue_bytes_max && !out.frames.is_empty() {
            if out.lagging.is_empty() {
                metrics::inc(&ctx.stats.slow_events);
                out.lag_since = Some(Instant::now());
            }
            out.lagging.push(sub);
            return Accept::Full;
        }
        out.bytes += frame.len();
        out.frames.push_back(Frame::Shared(frame));
        if let Some(w) = out.waker.take() {
            w.wake();
        }
        metrics::inc(&ctx.stats.deliveries);
        Accept::Queued
    }
}

impl Sink for Conn {
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

impl Conn {
    /// Waits for the next batch: everything queued, up to a write's worth.
    pub(crate) async fn next_batch(&self) -> Next {
        std::future::poll_fn(|cx| {
            let mut out = self.out.borrow_mut();
            if out.frames.is_empty() {
                if let Some(last) = out.closing.take() {
                    return Poll::Ready(Next::Last(last));
                }
                out.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let mut batch = Vec::new();
            let mut n = 0;
            while let Some(f) = out.frames.front() {
                if n > 0 && n + f.len() > WRITE_BATCH_BYTES_MAX {
                    break;
                }
                n += f.len();
                if let Some(f) = out.frames.pop_front() {
                    batch.push(f);
                }
            }
            out.bytes -= n;
            Poll::Ready(Next::Frames(batch))
        })
        .await
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
        self.wake_room();
    }

    /// The writer is gone: later offers are answered `Gone`.
    pub(crate) fn writer_done(&self) {
        {
            let mut out = self.out.borrow_mut();
            out.done = true;
            out.frames.clear();
            out.bytes = 0;
        }
        self.wake_room();
        if let Some(w) = self.closed_waker.borrow_mut().take() {
            w.wake();
        }
    }
}

impl Tracked for Conn {
    fn keepalive(&self, now: Instant) {
        keepalive(self, now);
    }
}

/// Periodic checks: the slow deadline, pings and pong timeouts.
fn keepalive(conn: &Conn, now: Instant) {
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
        .is_some_and(|t| now.saturating_duration_since(t) > limits.message_timeout)
    {
        metrics::inc(&conn.ctx.stats.limit_message_time);
        conn.close_because(wsp::close_code::POLICY, "message not completed in time");
        return;
    }
    if conn.subscription_count() == 0
        && now.saturating_duration_since(conn.last_input.get()) >= limits.idle_timeout
    {
        metrics::inc(&conn.ctx.stats.limit_idle);
        conn.close_because(wsp::close_code::POLICY, "idle timeout");
        return;
    }
    match conn.ping_sent.get() {
        Some(t) if now.saturating_duration_since(t) > limits.pong_timeout => {
            metrics::inc(&conn.ctx.stats.limit_pong);
            conn.close_because(wsp::close_code::POLICY, "pong timeout");
        }
        Some(_) => {}
        None if now.saturating_duration_since(conn.last_alive.get()) >= limits.ping_interval => {
            conn.ping_sent.set(Some(now));
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
        if !conn.enc.one_subscription()
            && now.saturating_duration_since(conn.created) >= ctx.limits.handshake_timeout
        {
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
        (_, Some(until)) if now >= until => {
            metrics::inc(&ctx.stats.auth_expired_closed);
            conn.close_because(wsp::close_code::POLICY, "token expired");
            false
        }
        (Some(exp), None) if now >= exp => {
            let grace = ctx.auth.cfg.expiry_grace;
            conn.grace_until.set(Some(now + grace));
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
