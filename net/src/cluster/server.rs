//! Storage side: links from router shards, served on every shard of a storage node.
//!
//! Each link holds at most one engine subscription per topic (its router shard's interest,
//! `subscribe_here`), so a message goes out once per router shard whatever the number of end
//! subscribers behind it; live items are encoded once per message and shard and the same buffer
//! is queued on every link. A request's answer (where its subscriber starts, with the replay)
//! is fetched from the topic's owning shard and travels in order with the items. A link is a
//! bounded subscriber like any other: past `link_queue_bytes_max` its topics lag and catch up
//! from history; if it stays behind past the lag limit it is closed (the router reconnects).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;
use fanfare_core::cluster::Replay;
use fanfare_core::presence::PresenceDelta;
use fanfare_core::{
    Accept, CloseReason, ClusterPort, MemberId, Message, Offer, PresenceQuery, PublishMeta, Seq,
    Sink, Start, SubId, SubscribeError, TaskKind, TopicKey,
};
use fanfare_proto::message::ErrorCode;
use fanfare_proto::{LinkItem, LinkMsg};
use glommio::net::TcpStream;

use rustls::pki_types::CertificateDer;

use super::config::ClusterConfig;
use super::tls::LinkTls;
use super::wire::{self, Encoder, Frame, FrameReader, LinkEnd, LinkQueue};
use crate::io::Io;
use crate::metrics::{self, NetStats};
use crate::ports::Listener;

/// Replay items per batch frame, and bytes.
const REPLAY_BATCH_ITEMS: usize = 256;
const REPLAY_BATCH_BYTES: usize = 256 * 1024;

/// What a shard's links share.
pub(crate) struct LinkServer {
    pub shard: ClusterPort,
    pub cfg: Arc<ClusterConfig>,
    pub node_id: String,
    pub stats: Arc<NetStats>,
    pub enc: Rc<Encoder>,
    /// Links this shard serves at most.
    pub links_max: usize,
    /// Refusals are logged at most every `REFUSAL_LOG_EVERY` (all are counted).
    pub refusal_log: wire::LogGate,
    /// The links served now (bounded by `links_max`), for closing those whose router left.
    pub conns: RefCell<Vec<std::rc::Weak<LinkConn>>>,
    /// Node ids alive in the latest view.
    pub alive: RefCell<ahash::AHashSet<String>>,
}

impl LinkServer {
    /// A new view: links from routers that were alive and are gone now are closed, so the
    /// members they held leave (a router whose host died never closes its TCP connection).
    pub(crate) fn set_view(&self, view: &super::view::ClusterView) {
        *self.alive.borrow_mut() = view.members.iter().map(|m| m.id.clone()).collect();
        self.conns.borrow_mut().retain(|w| w.strong_count() > 0);
        for c in self.conns.borrow().iter().filter_map(|w| w.upgrade()) {
            let alive = self.alive.borrow().contains(&c.router);
            if alive {
                c.seen_alive.set(true);
            } else if c.seen_alive.get() {
                metrics::inc(&self.stats.cluster_links_closed_dead);
                c.close("its node left the cluster");
            }
        }
    }
}

/// One link from a router shard.
pub(crate) struct LinkConn {
    srv: Rc<LinkServer>,
    /// The router's node id (from its hello).
    router: String,
    /// Seen alive in a view since the link came up (only then does leaving the view close it).
    seen_alive: Cell<bool>,
    q: Rc<LinkQueue>,
    /// Its subscription per topic.
    streams: RefCell<AHashMap<TopicKey, SubId>>,
    /// Subscriptions refused an item for lack of room.
    lagging: RefCell<Vec<SubId>>,
    fetches: Cell<usize>,
    publishes: Cell<usize>,
    closing: Cell<Option<&'static str>>,
}

impl LinkConn {
    fn close(&self, why: &'static str) {
        if self.closing.get().is_none() {
            self.closing.set(Some(why));
        }
        self.q.close();
    }

    fn push(&self, msg: &LinkMsg) {
        self.q.push(Frame::Own(self.srv.enc.frame(msg)));
    }

    fn error(&self, request_id: u64, code: ErrorCode, text: String) {
        self.push(&LinkMsg::Error {
            request_id,
            code,
            text,
        });
    }

    /// Sends the answer to request `id`: discontinuity, replay batches, then `Subscribed`.
    /// An answer read from the owner's disk comes in pages (`more`): each page's items go
    /// out and the next page is fetched, so the router gets one answer whose items run from
    /// the first page's start (`first`) to the head.
    fn answer(
        self: &Rc<Self>,
        id: u64,
        key: &TopicKey,
        r: Result<Replay, SubscribeError>,
        first: Option<Seq>,
    ) {
        let r = match r {
            Ok(r) => r,
            Err(e) => return self.error(id, e.code(), e.to_string()),
        };
        let first_page = first.is_none();
        if let Some((last, new, epoch)) = r.gap.filter(|_| first_page) {
            self.push(&LinkMsg::Discontinuity {
                request_id: id,
                namespace: key.namespace_name(),
                topic: key.topic_name(),
                last_seq: last.0,
                new_seq: new.0,
                new_epoch: epoch.0,
            });
        }
        // A later page that is a gap (a record that did not read back): the answer ends
        // here, and the router's next live item shows it the gap to ask about.
        let stop = !first_page && r.gap.is_some();
        if !stop {
            let mut batch: Vec<LinkItem> = Vec::new();
            let mut bytes = 0;
            for m in &r.items {
                bytes += m.payload.len();
                batch.push(link_item(m));
                if batch.len() >= REPLAY_BATCH_ITEMS || bytes >= REPLAY_BATCH_BYTES {
                    self.push(&batch_msg(id, key, r.epoch.0, std::mem::take(&mut batch)));
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                self.push(&batch_msg(id, key, r.epoch.0, batch));
            }
        }
        let first = first.unwrap_or(r.start);
        if r.more && !stop {
            let next = Start::At {
                epoch: r.epoch.0,
                seq: r.start.0 + r.items.len() as u64,
            };
            // This runs inside the shard (a fetch callback must not call into it): the next
            // page is asked for from a task of its own, once the shard is free.
            self.fetches.set(self.fetches.get() + 1);
            let c = self.clone();
            let k = key.clone();
            let tasks = self.srv.shard.shard().tasks();
            tasks
                .spawn(TaskKind::LinkWork, async move {
                    futures_lite::future::yield_now().await;
                    let c2 = c.clone();
                    let k2 = k.clone();
                    let asked = c.srv.shard.fetch_here(
                        k,
                        next,
                        Box::new(move |r| {
                            c2.fetches.set(c2.fetches.get() - 1);
                            c2.answer(id, &k2, r, Some(first));
                        }),
                    );
                    if let Err(e) = asked {
                        c.fetches.set(c.fetches.get() - 1);
                        c.error(id, e.code(), e.to_string());
                    }
                })
                .detach();
            return;
        }
        self.push(&LinkMsg::Subscribed {
            request_id: id,
            epoch: r.epoch.0,
            next_seq: first.0,
        });
    }

    /// Room again: lagging subscriptions catch up.
    fn after_write(&self) {
        if self.q.bytes() > self.srv.cfg.link_queue_bytes_max / 2 {
            return;
        }
        let lagging: Vec<SubId> = self.lagging.borrow_mut().drain(..).collect();
        for sub in lagging {
            self.srv.shard.shard().drained(sub);
        }
    }
}

fn link_item(m: &Message) -> LinkItem {
    LinkItem {
        seq: m.seq.0,
        payload: m.payload.clone(),
        publisher_id: m.publisher_id.as_deref().map(str::to_owned),
    }
}

fn batch_msg(request_id: u64, key: &TopicKey, epoch: u64, items: Vec<LinkItem>) -> LinkMsg {
    LinkMsg::ItemBatch {
        request_id,
        namespace: key.namespace_name(),
        topic: key.topic_name(),
        epoch,
        items,
    }
}

/// A link's subscription to one topic: the engine's sink.
struct Stream {
    conn: Rc<LinkConn>,
    key: TopicKey,
}

impl Sink for Stream {
    fn offer(&self, sub: SubId, offer: Offer<'_>) -> Accept {
        let conn = &self.conn;
        if conn.q.is_closed() {
            return Accept::Gone;
        }
        match offer {
            Offer::Item(d) => {
                if conn.q.bytes() >= conn.srv.cfg.link_queue_bytes_max {
                    conn.lagging.borrow_mut().push(sub);
                    return Accept::Full;
                }
                let enc = &conn.srv.enc;
                let key = &self.key;
                let frame = d.encoded(crate::slots::LINK, |_, m| {
                    std::rc::Rc::from(&*enc.frame(&batch_msg(
                        0,
                        key,
                        m.epoch.0,
                        vec![link_item(m)],
                    )))
                });
                metrics::inc(&conn.srv.stats.cluster_link_items_out);
                conn.q.push(Frame::Shared(frame));
                Accept::Queued
            }
            Offer::Closed(reason) => {
                conn.streams.borrow_mut().remove(&self.key);
                match reason {
                    CloseReason::TooSlow(_) => {
                        metrics::inc(&conn.srv.stats.cluster_link_closed_slow);
                        conn.close("the router stayed behind past the lag limit");
                    }
                    CloseReason::ShuttingDown => conn.close("shutting down"),
                    CloseReason::Failed(e) => {
                        tracing::debug!(topic = %self.key, error = %e, "link subscription refused");
                    }
                    _ => {}
                }
                Accept::Queued
            }
            Offer::Presence(ev) => {
                conn.push(&LinkMsg::PresenceEvent {
                    namespace: self.key.namespace_name(),
                    topic: self.key.topic_name(),
                    event: crate::presence::event_msg(ev),
                });
                Accept::Queued
            }
            // Subscribed, Discontinuity, Heartbeat: positions are the router's business (it
            // asks per subscriber, and a gap in the items tells it when to ask again).
            _ => Accept::Queued,
        }
    }
}

/// Accepts links on this shard until shutdown.
pub(crate) async fn accept_loop(listener: Listener, srv: Rc<LinkServer>) {
    let mut stop = Box::pin(srv.shard.shard().shutdown_signal());
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            (&mut stop).await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let served = srv
                    .stats
                    .cluster_links_served
                    .load(std::sync::atomic::Ordering::Relaxed);
                if served as usize >= srv.links_max {
                    metrics::inc(&srv.stats.cluster_links_refused);
                    if srv.refusal_log.open(wire::REFUSAL_LOG_EVERY) {
                        tracing::warn!(max = srv.links_max, "node link refused: link limit (logged at most every 10 s; see fanfare_net_cluster_links_refused_total)");
                    }
                    drop(stream);
                    continue;
                }
                // Counted from accept to the end of the task, so connections stuck before
                // their hello count too.
                metrics::add(&srv.stats.cluster_links_served, 1);
                let srv = srv.clone();
                let tasks = srv.shard.shard().tasks();
                tasks
                    .spawn(TaskKind::Link, async move {
                        serve_link(srv.clone(), stream).await;
                        metrics::dec(&srv.stats.cluster_links_served);
                    })
                    .detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accepting a node link failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_link(srv: Rc<LinkServer>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    // The whole handshake (TLS and hello) has one deadline: a peer stuck in it holds a slot.
    let deadline = std::time::Instant::now() + wire::HELLO_TIMEOUT;
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    match &srv.cfg.tls {
        None => serve_session(srv, stream, peer, None, left()).await,
        Some(tls) => {
            let r = wire::within(left(), "TLS handshake", async {
                tls.accept(stream).await.map_err(LinkEnd::Auth)
            })
            .await;
            match r {
                Ok((s, cert)) => serve_session(srv, s, peer, Some(cert), left()).await,
                Err(e) => {
                    if matches!(e, LinkEnd::Auth(_)) {
                        metrics::inc(&srv.stats.cluster_link_auth_failures);
                    }
                    if srv.refusal_log.open(wire::REFUSAL_LOG_EVERY) {
                        tracing::warn!(peer = ?peer, error = %e, "node link refused (logged at most every 10 s; see fanfare_net_cluster_link_auth_failures_total)");
                    }
                }
            }
        }
    }
}

/// Serves one link after its transport is set up: `cert` is the router's certificate when
/// links use TLS (it must name the node id of the hello).
async fn serve_session<S: Io>(
    srv: Rc<LinkServer>,
    stream: S,
    peer: Option<std::net::SocketAddr>,
    cert: Option<CertificateDer<'static>>,
    hello_timeout: std::time::Duration,
) {
    let (r, mut w) = futures_lite::io::split(stream);
    let mut reader = FrameReader::new(r, srv.cfg.link_frame_bytes_max, srv.stats.clone());
    let hello = wire::hello(
        &mut reader,
        &mut w,
        &srv.enc,
        &srv.node_id,
        srv.shard.shard().id().0,
    );
    let router = match wire::within(hello_timeout, "hello", hello).await {
        Ok(id) if cert.as_ref().is_some_and(|c| !LinkTls::names(c, &id)) => {
            metrics::inc(&srv.stats.cluster_link_auth_failures);
            if srv.refusal_log.open(wire::REFUSAL_LOG_EVERY) {
                tracing::warn!(peer = ?peer, router = %id, "node link refused: its certificate does not name the node id of its hello (logged at most every 10 s)");
            }
            return;
        }
        Ok(id) => id,
        Err(e) => {
            tracing::info!(peer = ?peer, error = %e, "node link refused");
            return;
        }
    };
    let conn = Rc::new(LinkConn {
        srv: srv.clone(),
        seen_alive: Cell::new(srv.alive.borrow().contains(&router)),
        router: router.clone(),
        q: Rc::new(LinkQueue::default()),
        streams: RefCell::new(AHashMap::new()),
        lagging: RefCell::new(Vec::new()),
        fetches: Cell::new(0),
        publishes: Cell::new(0),
        closing: Cell::new(None),
    });
    srv.conns.borrow_mut().push(Rc::downgrade(&conn));
    tracing::info!(router = %router, peer = ?peer, "node link up");
    let writer = {
        let c = conn.clone();
        wire::write_loop(conn.q.clone(), w, srv.stats.clone(), move || {
            c.after_write()
        })
    };
    let read = async {
        loop {
            let msg = reader.next().await?;
            on_message(&conn, msg)?;
        }
    };
    let end: Result<(), LinkEnd> = futures_lite::future::or(read, async {
        writer.await;
        Err(LinkEnd::Closed)
    })
    .await;
    conn.q.close();
    let streams: Vec<SubId> = conn.streams.borrow_mut().drain().map(|(_, s)| s).collect();
    for sub in streams {
        srv.shard.shard().unsubscribe(sub);
    }
    let why = conn
        .closing
        .get()
        .map(str::to_owned)
        .or_else(|| end.err().map(|e| e.to_string()))
        .unwrap_or_default();
    tracing::info!(router = %router, reason = %why, "node link closed");
}

fn on_message(conn: &Rc<LinkConn>, msg: LinkMsg) -> Result<(), LinkEnd> {
    let srv = &conn.srv;
    match msg {
        LinkMsg::Publish {
            request_id,
            namespace,
            topic,
            payload,
            publisher_id,
            idempotency_key,
        } => {
            if conn.publishes.get() >= srv.cfg.link_publishes_in_flight_max {
                conn.error(
                    request_id,
                    ErrorCode::Overloaded,
                    "too many publishes in flight on this link".into(),
                );
                return Ok(());
            }
            let key = TopicKey::from_names(&namespace, &topic);
            let meta = PublishMeta {
                publisher: publisher_id.map(Arc::from),
                idempotency_key: idempotency_key.map(Arc::from),
            };
            let fut = srv.shard.publish_here(key, payload, meta);
            conn.publishes.set(conn.publishes.get() + 1);
            let c = conn.clone();
            let tasks = srv.shard.shard().tasks();
            tasks
                .spawn(TaskKind::LinkWork, async move {
                    let r = fut.await;
                    c.publishes.set(c.publishes.get() - 1);
                    match r {
                        Ok(p) => c.push(&LinkMsg::PublishAck {
                            request_id,
                            epoch: p.epoch.0,
                            seq: p.seq.0,
                            durability: p.durability,
                        }),
                        Err(e) => c.error(request_id, e.code(), e.to_string()),
                    }
                })
                .detach();
        }
        LinkMsg::Interest {
            request_id,
            namespace,
            topic,
            subscribe,
            from,
        } => {
            // The decoder checked the names.
            let key = TopicKey::from_names(&namespace, &topic);
            if !subscribe {
                if let Some(sub) = conn.streams.borrow_mut().remove(&key) {
                    srv.shard.shard().unsubscribe(sub);
                }
                return Ok(());
            }
            if request_id == 0 {
                return Err(LinkEnd::Protocol("a subscribe request needs an id".into()));
            }
            if !conn.streams.borrow().contains_key(&key) {
                let sink = Rc::new(Stream {
                    conn: conn.clone(),
                    key: key.clone(),
                });
                match srv.shard.subscribe_here(key.clone(), Start::Latest, sink) {
                    Ok(acc) => {
                        conn.streams.borrow_mut().insert(key.clone(), acc.sub);
                    }
                    Err(e) => {
                        conn.error(request_id, e.code(), e.to_string());
                        return Ok(());
                    }
                }
            }
            if conn.fetches.get() >= srv.cfg.link_fetches_in_flight_max {
                conn.error(
                    request_id,
                    ErrorCode::Overloaded,
                    "too many subscribe requests in flight on this link".into(),
                );
                return Ok(());
            }
            conn.fetches.set(conn.fetches.get() + 1);
            let c = conn.clone();
            let cb_key = key.clone();
            let r = srv.shard.fetch_here(
                key,
                from,
                Box::new(move |r| {
                    c.fetches.set(c.fetches.get() - 1);
                    c.answer(request_id, &cb_key, r, None);
                }),
            );
            if let Err(e) = r {
                conn.fetches.set(conn.fetches.get() - 1);
                conn.error(request_id, e.code(), e.to_string());
            }
        }
        LinkMsg::Presence {
            namespace,
            topic,
            reset,
            count,
            joins,
            leaves,
        } => {
            // Only for topics the link subscribes to (it asks before it reports).
            let key = TopicKey::from_names(&namespace, &topic);
            let sub = conn.streams.borrow().get(&key).copied();
            if let Some(sub) = sub {
                let delta = PresenceDelta {
                    reset,
                    count,
                    joins: joins.into_iter().map(crate::presence::member_of).collect(),
                    leaves: leaves.into_iter().map(MemberId).collect(),
                };
                srv.shard.link_presence(sub, delta);
            }
        }
        LinkMsg::PresenceQuery {
            request_id,
            namespace,
            topic,
            members,
            after,
            limit,
        } => {
            if conn.fetches.get() >= srv.cfg.link_fetches_in_flight_max {
                conn.error(
                    request_id,
                    ErrorCode::Overloaded,
                    "too many requests in flight on this link".into(),
                );
                return Ok(());
            }
            let key = TopicKey::from_names(&namespace, &topic);
            let q = PresenceQuery {
                members,
                after,
                limit: limit as usize,
            };
            let fut = srv.shard.presence_here(key, q);
            conn.fetches.set(conn.fetches.get() + 1);
            let c = conn.clone();
            let tasks = srv.shard.shard().tasks();
            tasks
                .spawn(TaskKind::LinkWork, async move {
                    let r = fut.await;
                    c.fetches.set(c.fetches.get() - 1);
                    match r {
                        Ok(state) => c.push(&LinkMsg::PresenceState {
                            request_id,
                            state: crate::presence::state_msg(&state),
                        }),
                        Err(e) => c.error(request_id, e.code(), e.to_string()),
                    }
                })
                .detach();
        }
        _ => return Err(LinkEnd::Protocol("unexpected message from a router".into())),
    }
    Ok(())
}
