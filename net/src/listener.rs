//! Accepting connections: each shard binds the node's port (see `ports`), enforces the
//! connection limit, tells TLS from plaintext and HTTP/2 from HTTP/1.1 by the first bytes,
//! and hands the connection to its transport. Also the shard's keepalive sweep, which runs
//! every connection's periodic checks so the data path never arms a timer.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanfare_core::{ShardHandle, TaskKind};
use futures_lite::io::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::auth::Auth;
use crate::cluster::ClusterShared;
use crate::config::Limits;
use crate::ctx::{CtxParts, NetCtx};
use crate::hub::AdminHub;
use crate::io::{read_some, timeout, unless, Io, Stop};
use crate::metrics::{self, NetStats, Registry};
use crate::ports::Listener;
use crate::transport;
use crate::transport::http1::Upgraded;

/// The client connection preface of HTTP/2 (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every shard of a node shares (read-only after start).
#[derive(Clone)]
pub(crate) struct NodeShared {
    pub addr: SocketAddr,
    pub limits: Arc<Limits>,
    pub registry: Arc<Registry>,
    pub shards: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Arc<Auth>,
    pub admin: Arc<AdminHub>,
    pub cluster: Option<Arc<ClusterShared>>,
}

/// Binds this shard's listener and starts its accept loop, keepalive sweep and admin inbox.
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
    let listener = Listener::bind(addr)?;
    let stats = Arc::new(NetStats::default());
    let latency_snapshot = Arc::new(std::sync::Mutex::new(metrics::latency_histogram()));
    registry.register(
        usize::from(shard.id().0),
        stats.clone(),
        shard.stats(),
        latency_snapshot.clone(),
        shard.tasks().stats(),
    );
    let ctx = Rc::new(NetCtx::new(CtxParts {
        connections_max: limits.connections_max.div_ceil(shards.max(1)),
        shard,
        limits,
        stats,
        registry,
        tls: tls.map(futures_rustls::TlsAcceptor::from),
        latency_snapshot,
        auth,
        admin: admin.clone(),
        cluster: cluster.clone(),
    }));
    if let Some(cluster) = cluster {
        crate::cluster::start_shard(&ctx.shard, cluster, ctx.stats.clone())?;
    }
    let inbox = admin.register(usize::from(ctx.shard.id().0));
    let tasks = ctx.shard.tasks();
    let admin = crate::api::admin::admin_loop(ctx.clone(), inbox);
    tasks.spawn(TaskKind::Admin, admin).detach();
    tasks
        .spawn(TaskKind::ConnSweep, sweep_loop(ctx.clone()))
        .detach();
    tasks
        .spawn(TaskKind::Accept, accept_loop(listener, ctx))
        .detach();
    Ok(())
}

/// One timer per shard runs every connection's periodic checks (slow deadline, pings, pong
/// and idle timeouts), so the per-message read and write paths never arm a timer.
async fn sweep_loop(ctx: Rc<NetCtx>) {
    let tick = sweep_tick(&ctx.limits);
    let mut stop: Stop = Box::pin(ctx.shard.shutdown_signal());
    let mut last_snapshot = Instant::now();
    let mut trim = crate::memory::TrimPolicy::new(Instant::now());
    // A trim runs in a background task (it takes 0.4-3 ms, and connections wait on nothing
    // of it); one at a time.
    let trimming = Rc::new(std::cell::Cell::new(false));
    while unless(&mut stop, glommio::timer::sleep(tick))
        .await
        .is_some()
    {
        let now = Instant::now();
        for c in ctx.live() {
            c.keepalive(now);
        }
        // After a wave of connections closed, give the memory they held back to the system.
        if !trimming.get() && trim.tick(ctx.closed_since_trim.get(), now) {
            ctx.closed_since_trim.set(0);
            trimming.set(true);
            let tasks = ctx.shard.tasks();
            let (ctx, trimming) = (ctx.clone(), trimming.clone());
            let give_back = async move {
                let started = Instant::now();
                let returned = crate::memory::give_back();
                metrics::inc(&ctx.stats.memory_trims);
                tracing::debug!(
                    took_us = started.elapsed().as_micros() as u64,
                    returned,
                    "gave freed memory back to the system"
                );
                trimming.set(false);
            };
            tasks.spawn(TaskKind::Trim, give_back).detach();
        }
        // Publish the latency histogram for scrapes (cumulative since start), once a second,
        // copied into the snapshot's own counts: a fresh clone (136 KiB) every second landed
        // wherever the heap had room, and after a storm that was in the middle of the space
        // a trim would otherwise give back.
        if last_snapshot.elapsed() >= Duration::from_secs(1) {
            last_snapshot = Instant::now();
            let mut snapshot = ctx
                .latency_snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            snapshot.reset();
            // Both come from `metrics::latency_histogram` (the same bounds): adding fits.
            if let Err(e) = snapshot.add(&*ctx.latency.borrow()) {
                tracing::debug!(error = %e, "latency snapshot not updated");
            }
        }
    }
    // Stopping: every connection is told (a WebSocket session that starts after this sees
    // the flag when it begins).
    ctx.stopping.set(true);
    for c in ctx.live() {
        c.stop();
    }
}

fn sweep_tick(limits: &Limits) -> Duration {
    let t = (limits.slow_deadline / 4)
        .min(limits.ping_interval)
        .min(limits.pong_timeout / 2)
        .min(limits.idle_timeout / 4)
        .min(limits.message_timeout / 2);
    t.clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// First pause after a failed accept; doubled per failure in a row up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accepts while they keep failing (EMFILE: out of descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this interval for failing accepts (the metric counts every one).
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

async fn accept_loop(listener: Listener, ctx: Rc<NetCtx>) {
    let mut stop: Stop = Box::pin(ctx.shard.shutdown_signal());
    let tasks = ctx.shard.tasks();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failures_unlogged = 0u64;
    let mut last_log: Option<Instant> = None;
    loop {
        let accepted = unless(&mut stop, listener.accept()).await;
        let stream = match accepted {
            None => return, // shutdown: stop accepting
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: connections already open keep being served; new ones wait
                // in the kernel's backlog while we back off (doubling, up to a second), and the
                // log says so at most every ten seconds.
                metrics::inc(&ctx.stats.accept_errors);
                failures_unlogged += 1;
                if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_INTERVAL) {
                    tracing::warn!(
                        error = %e,
                        failures = failures_unlogged,
                        open = ctx.connections.get(),
                        backoff_ms = backoff.as_millis() as u64,
                        "accept failing (out of file descriptors? raise `ulimit -n`); backing off"
                    );
                    last_log = Some(Instant::now());
                    failures_unlogged = 0;
                }
                if unless(&mut stop, glommio::timer::sleep(backoff))
                    .await
                    .is_none()
                {
                    return;
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF_MIN;
        metrics::inc(&ctx.stats.connections_accepted);
        if ctx.connections.get() >= ctx.connections_max {
            metrics::inc(&ctx.stats.connections_refused);
            ctx.shard
                .tasks()
                .spawn(TaskKind::Refuse, refuse(stream))
                .detach();
            continue;
        }
        ctx.connections.set(ctx.connections.get() + 1);
        metrics::set(&ctx.stats.connections_open, ctx.connections.get() as u64);
        let ctx2 = ctx.clone();
        // The handshake stage, boxed before the task exists: the task then holds a pointer
        // rather than the stream, for the connection's lifetime. It is freed before a
        // WebSocket session runs (see `handle`).
        let handshake = Box::pin(handle(stream, ctx.clone()));
        tasks
            .spawn(TaskKind::Connection, async move {
                // Shutdown waits (up to drain_timeout) for this connection to say goodbye.
                let _hold = ctx2.shard.hold();
                let session = handshake.await;
                if let Some(session) = session {
                    session.await;
                }
                ctx2.connections.set(ctx2.connections.get() - 1);
                ctx2.closed_since_trim
                    .set(ctx2.closed_since_trim.get().saturating_add(1));
                metrics::set(&ctx2.stats.connections_open, ctx2.connections.get() as u64);
            })
            .detach();
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let resp = fanfare_proto::ws::reject_response(503, "connection limit reached");
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.close().await;
}

/// Serves one accepted connection: terminates TLS when it starts with a TLS record, then
/// tells HTTP/2 (its preface) from HTTP/1.1, all within the handshake time.
///
/// Memory: a connection's task lives as long as the connection, and an async fn's state is as
/// large as its largest await. So each stage is boxed and dropped when done, and a WebSocket
/// upgrade is returned as the session to run: the caller runs it after this future (with the
/// HTTP/1.1 and TLS stages) is freed, so an idle WebSocket holds only its session's state.
async fn handle(stream: TcpStream, ctx: Rc<NetCtx>) -> Option<Session> {
    let peer = stream
        .peer_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(ctx.limits.slow_deadline));
    let deadline = Instant::now() + ctx.limits.handshake_timeout;
    let Some(acceptor) = ctx.tls.clone() else {
        let up = Box::pin(plaintext(stream, ctx.clone(), deadline, peer)).await;
        return up.map(|u| websocket(u, ctx, peer));
    };
    // A TLS connection starts with a handshake record (content type 22).
    let mut first = [0u8; 1];
    let left = deadline.saturating_duration_since(Instant::now());
    match timeout(left, stream.peek(&mut first)).await {
        Some(Ok(1)) if first[0] == 0x16 => {}
        Some(Ok(_)) => {
            let up = Box::pin(plaintext(stream, ctx.clone(), deadline, peer)).await;
            return up.map(|u| websocket(u, ctx, peer));
        }
        Some(Err(_)) => return None,
        None => {
            metrics::inc(&ctx.stats.limit_handshake_time);
            return None;
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    match timeout(left, Box::pin(acceptor.accept(stream))).await {
        Some(Ok(tls)) => {
            metrics::inc(&ctx.stats.connections_tls);
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let h2 = transport::h2::serve(tls, BytesMut::new(), ctx, deadline, peer);
                Box::pin(h2).await;
                return None;
            }
            let up = Box::pin(plaintext(tls, ctx.clone(), deadline, peer)).await;
            up.map(|u| websocket(u, ctx, peer))
        }
        Some(Err(e)) => {
            metrics::inc(&ctx.stats.tls_handshake_errors);
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        None => {
            metrics::inc(&ctx.stats.limit_handshake_time);
            None
        }
    }
}

/// A WebSocket session to run, its future in one allocation.
type Session = Pin<Box<dyn Future<Output = ()>>>;

/// The WebSocket session an HTTP/1.1 upgrade handed over.
fn websocket<S: Io>(u: Upgraded<S>, ctx: Rc<NetCtx>, peer: IpAddr) -> Session {
    // The session does not keep the upgrade's shutdown future: `NetCtx::stopping` tells it.
    transport::ws_session::session(ctx, u.r, u.w, u.buf, u.up, peer)
}

/// Serves a connection once its bytes are plaintext HTTP: HTTP/2 when they open with its
/// preface, else HTTP/1.1 (which returns the connection when a WebSocket upgrade takes it).
async fn plaintext<S: Io>(
    mut stream: S,
    ctx: Rc<NetCtx>,
    deadline: Instant,
    peer: IpAddr,
) -> Option<Upgraded<S>> {
    let mut buf = BytesMut::new();
    // Read until the bytes are either HTTP/2's preface or cannot be (HTTP/1.1).
    while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, read_some(&mut stream, &mut buf, &ctx.stats)).await {
            Some(Ok(n)) if n > 0 => {}
            Some(_) => return None,
            None => {
                metrics::inc(&ctx.stats.limit_handshake_time);
                return None;
            }
        }
    }
    if buf.starts_with(H2_PREFACE) {
        Box::pin(transport::h2::serve(stream, buf, ctx, deadline, peer)).await;
        return None;
    }
    Box::pin(transport::http1::serve(stream, buf, ctx, deadline, peer)).await
}
