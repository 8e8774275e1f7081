//! Accepting connections, and what every connection shares: the bounded send queue that the
//! engine fills (the connection is the [`Sink`] of all its subscriptions) and the writer
//! task that drains it with one write per batch.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use fanfare_core::{
    Accept, CloseReason, Delivery, Encoded, Message, Offer, ShardHandle, Sink, SubId,
    SubscribeError,
};
use fanfare_proto::message::{encode_item, ErrorCode, ItemRef};
use fanfare_proto::{framing, sse, ws as wsp, ServerMsg};
use flatbuffers::FlatBufferBuilder;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use glommio::net::{TcpListener, TcpStream};

use crate::auth::{Auth, AuthError, FailureLimiter, Grant, Right};
use crate::metrics::{self, NetStats, Registry};
use crate::Limits;

/// A client byte stream: a plain TCP stream or TLS over one.
pub(crate) trait Io:
    futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin + 'static
{
}
impl<T: futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin + 'static> Io for T {}

/// Encoding slots in a [`Delivery`] cache.
const SLOT_WS: usize = 0;
const SLOT_FRAMES: usize = 1;
const SLOT_SSE: usize = 2;
/// Most bytes one write carries.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Registry size below which dead connections are left for the sweep to prune.
const LIVE_PRUNE_MIN: usize = 1024;
/// Bytes read per read call.
pub(crate) const READ_CHUNK_BYTES: usize = 4096;

/// What a shard's connections share.
pub(crate) struct NetCtx {
    pub shard: ShardHandle,
    pub limits: Arc<Limits>,
    pub stats: Arc<NetStats>,
    pub registry: Arc<Registry>,
    pub connections: Cell<usize>,
    pub connections_max: usize,
    /// Set when TLS is configured: connections starting with a TLS record are terminated here.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// Publish-to-delivery latency recorded on this shard (µs); the sweep copies it into
    /// `latency_snapshot` for scrapes, so the data path never takes a lock.
    pub latency: RefCell<hdrhistogram::Histogram<u64>>,
    pub latency_snapshot: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    /// Every live connection, for the keepalive sweep. Dead entries are pruned by the sweep
    /// and, so churn between sweeps cannot grow it, whenever it has doubled since the last
    /// prune (amortized O(1) per connection).
    pub live: RefCell<Vec<std::rc::Weak<Conn>>>,
    live_prune_at: Cell<usize>,
    /// Builder for the flatbuffers this shard encodes (never used across an await).
    pub fbb: RefCell<FlatBufferBuilder<'static>>,
    /// Access control (shared, read-only) and this shard's memory of failures by IP.
    pub auth: Arc<Auth>,
    pub limiter: RefCell<FailureLimiter>,
    /// Every shard's admin inbox.
    pub admin: Arc<crate::admin::AdminHub>,
    /// Cluster state (None: a single node).
    pub cluster: Option<Arc<crate::cluster::ClusterShared>>,
    /// Whether this node serves clients' publishes and subscribes (the router role).
    pub router_role: bool,
}

/// Why a request was not authenticated.
#[derive(Debug)]
pub(crate) enum Denied {
    /// The client's IP is over its failure budget; the token was not looked at.
    RateLimited,
    /// The token was missing or refused.
    Failed(AuthError),
}

impl Denied {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Denied::RateLimited => 429,
            Denied::Failed(_) => 401,
        }
    }

    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Denied::RateLimited => ErrorCode::RateLimited,
            Denied::Failed(e) => e.code(),
        }
    }

    /// A human-readable reason.
    pub fn text(&self) -> String {
        match self {
            Denied::RateLimited => {
                "too many failed authentications from this address; retry later".into()
            }
            Denied::Failed(e) => e.to_string(),
        }
    }
}

impl NetCtx {
    /// Encodes a server message as a flatbuffer and wraps it for `mode`.
    pub fn frame(&self, mode: Mode, msg: &ServerMsg) -> Bytes {
        let mut fbb = self.fbb.borrow_mut();
        msg.encode_into(&mut fbb);
        wrap(mode, fbb.finished_data())
    }

    fn encode_item(&self, mode: Mode, topic: u64, m: &Message) -> Bytes {
        let us = m
            .published_at
            .elapsed()
            .as_micros()
            .min(u128::from(u64::MAX)) as u64;
        self.latency.borrow_mut().saturating_record(us.max(1));
        match mode {
            Mode::Sse => {
                metrics::inc(&self.stats.encodes_sse);
                sse::item_to_bytes(m.epoch.0, m.seq.0, &m.payload)
            }
            Mode::Ws | Mode::Frames => {
                metrics::inc(if mode == Mode::Ws {
                    &self.stats.encodes_ws
                } else {
                    &self.stats.encodes_frames
                });
                let mut fbb = self.fbb.borrow_mut();
                encode_item(
                    &mut fbb,
                    ItemRef {
                        subscription_id: topic,
                        epoch: m.epoch.0,
                        seq: m.seq.0,
                        payload: &m.payload,
                        publisher_id: m.publisher_id.as_deref(),
                    },
                );
                wrap(mode, fbb.finished_data())
            }
        }
    }
}

impl NetCtx {
    /// Whether requests need a token.
    pub fn auth_on(&self) -> bool {
        self.auth.enabled()
    }

    /// Checks the token a client presented (authentication on). A refusal is counted,
    /// logged once and answered only after the failure delay; an IP over its failure budget
    /// is refused at once, without looking at the token.
    pub async fn authenticate(
        &self,
        peer: std::net::IpAddr,
        token: Option<&str>,
    ) -> Result<Arc<Grant>, Denied> {
        let now = Instant::now();
        if self.limiter.borrow().blocked(peer, now) {
            metrics::inc(&self.stats.auth_rate_limited);
            return Err(Denied::RateLimited);
        }
        let r = match token {
            None => Err(AuthError::Missing),
            Some(t) => self.auth.verifier.verify(t),
        };
        match r {
            Ok(g) => {
                metrics::inc(&self.stats.auth_ok);
                Ok(Arc::new(g))
            }
            Err(e) => {
                metrics::inc(match e {
                    AuthError::Missing => &self.stats.auth_failures_missing,
                    AuthError::Expired | AuthError::NotYetValid => {
                        &self.stats.auth_failures_expired
                    }
                    _ => &self.stats.auth_failures_invalid,
                });
                {
                    let mut l = self.limiter.borrow_mut();
                    l.record(peer, now);
                    metrics::set(&self.stats.auth_tracked_ips, l.len() as u64);
                }
                tracing::info!(peer = %peer, reason = %e, "authentication failed");
                glommio::timer::sleep(self.auth.cfg.failure_delay).await;
                Err(Denied::Failed(e))
            }
        }
    }
}

/// Whether `grant` (None: authentication is off) allows `right` on `ns/topic`.
pub(crate) fn permits(
    ctx: &NetCtx,
    grant: Option<&Grant>,
    ns: &str,
    topic: &str,
    right: Right,
) -> Result<(), (ErrorCode, String)> {
    if !ctx.router_role {
        return Err((
            ErrorCode::Unavailable,
            "this node has only the storage role: publish and subscribe through a router".into(),
        ));
    }
    if !ctx.auth_on() {
        return Ok(());
    }
    let Some(g) = grant else {
        return Err((ErrorCode::Unauthorized, "authenticate first".into()));
    };
    if g.allows(ns, topic, right) {
        return Ok(());
    }
    metrics::inc(&ctx.stats.auth_forbidden);
    Err((
        ErrorCode::Forbidden,
        format!(
            "the token of {} does not grant {right} on {ns}/{topic}",
            g.subject
        ),
    ))
}

fn wrap(mode: Mode, body: &[u8]) -> Bytes {
    match mode {
        Mode::Ws => wsp::encode_server_frame(wsp::Opcode::Binary, body),
        Mode::Frames | Mode::Sse => framing::encode_to_bytes(body),
    }
}

/// How a connection's subscription events go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// WebSocket binary frames of `ServerMessage`s.
    Ws,
    /// HTTP chunked body of length-prefixed `ServerMessage`s.
    Frames,
    /// HTTP chunked body of Server-Sent Events.
    Sse,
}

/// Binds this shard's listener and spawns its accept loop.
/// What every shard of a node shares (read-only after start).
#[derive(Clone)]
pub(crate) struct NodeShared {
    pub addr: SocketAddr,
    pub limits: Arc<Limits>,
    pub registry: Arc<Registry>,
    pub shards: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Arc<Auth>,
    pub admin: Arc<crate::admin::AdminHub>,
    pub cluster: Option<Arc<crate::cluster::ClusterShared>>,
}

pub(crate) fn serve_shard(shard: ShardHandle, node: NodeShared) -> std::io::Result<()> {
    let NodeShared {
        addr,
        limits,
        registry,
        shards,
        tls,
        auth,
        admin,
        cluster,
    } = node;
    let listener = TcpListener::bind(addr)?;
    let stats = Arc::new(NetStats::default());
    let latency_snapshot = Arc::new(std::sync::Mutex::new(metrics::latency_histogram()));
    registry.register(
        usize::from(shard.id().0),
        stats.clone(),
        shard.stats(),
        latency_snapshot.clone(),
    );
    let ctx = Rc::new(NetCtx {
        connections_max: limits.connections_max.div_ceil(shards.max(1)),
        shard,
        limits,
        stats,
        registry,
        connections: Cell::new(0),
        tls: tls.map(futures_rustls::TlsAcceptor::from),
        live: RefCell::new(Vec::new()),
        live_prune_at: Cell::new(LIVE_PRUNE_MIN),
        latency: RefCell::new(metrics::latency_histogram()),
        latency_snapshot,
        fbb: RefCell::new(FlatBufferBuilder::with_capacity(4096)),
        limiter: RefCell::new(FailureLimiter::new(&auth.cfg)),
        auth,
        admin: admin.clone(),
        router_role: cluster.as_ref().is_none_or(|c| c.cfg.roles.router),
        cluster: cluster.clone(),
    });
    if let Some(cluster) = cluster {
        crate::cluster::start_shard(&ctx.shard, cluster, ctx.stats.clone())?;
    }
    let inbox = admin.register(usize::from(ctx.shard.id().0));
    glommio::spawn_local(crate::admin::admin_loop(ctx.clone(), inbox)).detach();
    glommio::spawn_local(sweep_loop(ctx.clone())).detach();
    glommio::spawn_local(accept_loop(listener, ctx)).detach();
    Ok(())
}

/// One timer per shard runs every connection's periodic checks (slow deadline, pings, pong
/// and idle timeouts), so the per-message read and write paths never arm a timer.
async fn sweep_loop(ctx: Rc<NetCtx>) {
    let tick = sweep_tick(&ctx.limits);
    let mut stop: Pin<Box<dyn Future<Output = ()>>> = Box::pin(ctx.shard.shutdown_signal());
    let mut last_snapshot = Instant::now();
    while unless(&mut stop, glommio::timer::sleep(tick))
        .await
        .is_some()
    {
        let conns: Vec<Rc<Conn>> = {
            let mut live = ctx.live.borrow_mut();
            live.retain(|w| w.strong_count() > 0);
            live.iter().filter_map(std::rc::Weak::upgrade).collect()
        };
        for c in conns {
            keepalive(&c);
        }
        // Publish the latency histogram for scrapes (cumulative since start), once a second.
        if last_snapshot.elapsed() >= Duration::from_secs(1) {
            last_snapshot = Instant::now();
            let snapshot = ctx.latency.borrow().clone();
            *ctx.latency_snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = snapshot;
        }
    }
}

fn sweep_tick(limits: &Limits) -> Duration {
    let t = (limits.slow_deadline / 4)
        .min(limits.ping_interval)
        .min(limits.pong_timeout / 2)
        .min(limits.idle_timeout / 4);
    t.clamp(Duration::from_millis(5), Duration::from_secs(1))
}

async fn accept_loop(listener: TcpListener, ctx: Rc<NetCtx>) {
    let mut stop = Box::pin(ctx.shard.shutdown_signal());
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            (&mut stop).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return, // shutdown: stop accepting
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: say so once per occurrence and back off a little.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        metrics::inc(&ctx.stats.connections_accepted);
        if ctx.connections.get() >= ctx.connections_max {
            metrics::inc(&ctx.stats.connections_refused);
            glommio::spawn_local(refuse(stream)).detach();
            continue;
        }
        ctx.connections.set(ctx.connections.get() + 1);
        let ctx2 = ctx.clone();
        glommio::spawn_local(async move {
            crate::http::handle(stream, ctx2.clone()).await;
            ctx2.connections.set(ctx2.connections.get() - 1);
        })
        .detach();
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let resp = wsp::reject_response(503, "connection limit reached");
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.close().await;
}

// -------------------------------------------------------------------- the send queue

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
    topic: String,
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
    pub mode: Mode,
    /// The client's address (for logs).
    pub peer: std::net::IpAddr,
    out: RefCell<Out>,
    subs: RefCell<AHashMap<SubId, SubEntry>>,
    /// The subscribe request being made (its events can arrive before `subscribe` returns).
    pending: RefCell<Option<(u64, String)>>,
    pub publishes_in_flight: Cell<usize>,
    publish_waker: RefCell<Option<Waker>>,
    /// Last application message from the client (drives the idle timeout).
    pub last_input: Cell<Instant>,
    /// Last bytes of any kind from the client, pongs included (drives pings).
    pub last_alive: Cell<Instant>,
    pub ping_sent: Cell<Option<Instant>>,
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
    pub fn new(ctx: Rc<NetCtx>, mode: Mode, peer: std::net::IpAddr) -> Rc<Self> {
        let conn = Rc::new(Self {
            ctx: ctx.clone(),
            mode,
            peer,
            out: RefCell::new(Out::default()),
            subs: RefCell::new(AHashMap::new()),
            pending: RefCell::new(None),
            publishes_in_flight: Cell::new(0),
            publish_waker: RefCell::new(None),
            last_input: Cell::new(Instant::now()),
            last_alive: Cell::new(Instant::now()),
            ping_sent: Cell::new(None),
            closed_waker: RefCell::new(None),
            room_waker: RefCell::new(None),
            created: Instant::now(),
            grant: RefCell::new(None),
            token_expires: Cell::new(None),
            grace_until: Cell::new(None),
        });
        let mut live = ctx.live.borrow_mut();
        if live.len() >= ctx.live_prune_at.get() {
            live.retain(|w| w.strong_count() > 0);
            ctx.live_prune_at.set((2 * live.len()).max(LIVE_PRUNE_MIN));
        }
        live.push(Rc::downgrade(&conn));
        drop(live);
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
            .filter(|(_, e)| {
                let (ns, topic) = e.topic.split_once('/').unwrap_or((e.topic.as_str(), ""));
                !g.allows(ns, topic, Right::Subscribe)
            })
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

    /// Queues a server message as a control frame.
    pub fn send(&self, msg: &ServerMsg) {
        let f = self.ctx.frame(self.mode, msg);
        self.push(f);
    }

    /// Ends the connection for a reason worth an operator's attention (a limit, a protocol
    /// error, authentication): one log line, then the mode's goodbye with `code` and `reason`.
    pub fn close_because(&self, code: u16, reason: &str) {
        if self.is_closing() {
            return;
        }
        tracing::info!(peer = %self.peer, transport = ?self.mode, reason, "closing connection");
        self.close_with(goodbye(self.mode, code, reason));
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

    pub fn has_topic(&self, topic: &str) -> bool {
        self.subs.borrow().values().any(|s| s.topic == topic)
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
        ns: &str,
        topic: &str,
        start: fanfare_core::Start,
    ) -> Result<fanfare_core::SubscribeAccepted, SubscribeError> {
        *self.pending.borrow_mut() = Some((request_id, format!("{ns}/{topic}")));
        let r = self.ctx.shard.subscribe(ns, topic, start, self.clone());
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

    /// Waits until fewer than the limit of publishes are in flight.
    pub async fn publish_slot(&self) {
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
        let mode = self.mode;
        let slot = match mode {
            Mode::Ws => SLOT_WS,
            Mode::Frames => SLOT_FRAMES,
            Mode::Sse => SLOT_SSE,
        };
        let ctx = &self.ctx;
        let frame = d.encoded(slot, |topic, m| ctx.encode_item(mode, topic.0, m));
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
            } => {
                let Some((_, request_id)) = self.entry(sub, Some(topic.0)) else {
                    return Accept::Gone;
                };
                if self.mode != Mode::Sse {
                    self.send(&ServerMsg::Subscribed {
                        request_id,
                        subscription_id: topic.0,
                        epoch: epoch.0,
                        next_seq: next_seq.0,
                    });
                }
            }
            Offer::Discontinuity {
                last_seq,
                new_seq,
                new_epoch,
            } => {
                let Some((wire, _)) = wire(self) else {
                    return Accept::Gone;
                };
                if self.mode == Mode::Sse {
                    let mut b = BytesMut::new();
                    sse::encode_discontinuity(&mut b, last_seq.0, new_seq.0, new_epoch.0);
                    self.push(b.freeze());
                } else {
                    self.send(&ServerMsg::Discontinuity {
                        subscription_id: wire,
                        last_seq: last_seq.0,
                        new_seq: new_seq.0,
                        new_epoch: new_epoch.0,
                    });
                }
            }
            Offer::Heartbeat { epoch, next_seq } => {
                let Some((wire, _)) = wire(self) else {
                    return Accept::Gone;
                };
                if self.out.borrow().bytes >= self.ctx.limits.send_queue_bytes_max {
                    return Accept::Full;
                }
                if self.mode == Mode::Sse {
                    let mut b = BytesMut::new();
                    sse::encode_heartbeat(&mut b, epoch.0, next_seq.0);
                    self.push(b.freeze());
                } else {
                    self.send(&ServerMsg::Heartbeat {
                        subscription_id: wire,
                        epoch: epoch.0,
                        next_seq: next_seq.0,
                    });
                }
            }
            Offer::Closed(reason) => {
                let Some((wire, request_id)) = wire(self) else {
                    return Accept::Gone;
                };
                self.remove_sub(sub);
                let (code, text) = close_code(reason);
                match (self.mode, reason) {
                    (Mode::Sse, _) => {
                        let mut b = BytesMut::new();
                        sse::encode_error(&mut b, &text);
                        self.push(b.freeze());
                        self.close_with(Bytes::new());
                    }
                    (_, CloseReason::Failed(_)) => self.send(&ServerMsg::Error {
                        request_id,
                        code,
                        text,
                    }),
                    _ => self.send(&ServerMsg::SubscriptionClosed {
                        subscription_id: wire,
                        code,
                        text,
                    }),
                }
                if self.mode == Mode::Frames {
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

/// Drains `conn`'s queue into the socket until the connection ends. Everything queued
/// meanwhile goes out in one write (wrapped in one HTTP chunk for chunked bodies).
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

/// Drains `conn`'s queue into the socket until the connection ends. Everything queued
/// meanwhile goes out in one write (wrapped in one HTTP chunk for chunked bodies).
pub(crate) async fn writer<W: futures_lite::io::AsyncWrite + Unpin>(
    conn: Rc<Conn>,
    mut w: W,
    chunked: bool,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        buf.clear();
        match conn.next_batch().await {
            Next::Frames(batch) => {
                if chunked {
                    chunk(&mut buf, &batch);
                } else {
                    for f in &batch {
                        buf.extend_from_slice(f);
                    }
                }
            }
            Next::Last(last) => {
                if chunked {
                    if !last.is_empty() {
                        chunk(&mut buf, &[Frame::Own(last)]);
                    }
                    buf.extend_from_slice(b"0\r\n\r\n");
                } else {
                    buf.extend_from_slice(&last);
                }
                let _ = w.write_all(&buf).await;
                let _ = w.flush().await;
                break;
            }
        }
        if let Err(e) = w.write_all(&buf).await {
            if e.kind() == std::io::ErrorKind::TimedOut {
                metrics::inc(&conn.ctx.stats.closed_slow);
                tracing::info!(
                    "closing a connection whose socket accepted nothing for the slow deadline"
                );
            }
            break;
        }
        conn.wrote(buf.len());
        if buf.capacity() > 2 * WRITE_BATCH_BYTES_MAX {
            buf = Vec::new();
        }
    }
    conn.writer_done();
    let _ = w.close().await;
}

fn chunk(buf: &mut Vec<u8>, frames: &[Frame]) {
    use std::io::Write as _;
    let n: usize = frames.iter().map(|f| f.len()).sum();
    let _ = write!(buf, "{n:x}\r\n");
    for f in frames {
        buf.extend_from_slice(f);
    }
    buf.extend_from_slice(b"\r\n");
}

/// Periodic checks: the slow deadline, pings and pong timeouts.
fn keepalive(conn: &Conn) {
    let now = Instant::now();
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
    if conn.mode != Mode::Ws {
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
        if conn.mode == Mode::Ws
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
            if conn.mode == Mode::Sse {
                let mut b = BytesMut::new();
                sse::encode_error(&mut b, &text);
                conn.push(b.freeze());
            } else {
                conn.send(&ServerMsg::Error {
                    request_id: 0,
                    code: ErrorCode::TokenExpired,
                    text,
                });
            }
            true
        }
        _ => true,
    }
}

/// The last bytes of a connection: a close frame for WebSocket, an error event for SSE.
pub(crate) fn goodbye(mode: Mode, code: u16, reason: &str) -> Bytes {
    match mode {
        Mode::Ws => wsp::encode_server_frame(wsp::Opcode::Close, &wsp::close_payload(code, reason)),
        Mode::Sse => {
            let mut b = BytesMut::new();
            sse::encode_error(&mut b, reason);
            b.freeze()
        }
        Mode::Frames => Bytes::new(),
    }
}

/// Reads more bytes into `buf`; `Ok(0)` at end of stream.
pub(crate) async fn read_some<S: Io>(
    r: &mut ReadHalf<S>,
    buf: &mut BytesMut,
    chunk: &mut [u8],
    stats: &NetStats,
) -> std::io::Result<usize> {
    let n = r.read(chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    metrics::add(&stats.bytes_in, n as u64);
    Ok(n)
}

/// A future's output or `None` if `stop` fires first.
pub(crate) async fn unless<T>(
    stop: &mut Pin<Box<dyn Future<Output = ()>>>,
    f: impl Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        stop.as_mut().await;
        None
    })
    .await
}
