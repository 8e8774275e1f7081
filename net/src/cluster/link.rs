//! Router side: one shard's links to storage nodes (at most one per node), implementing the
//! engine's [`Upstream`].
//!
//! A link is created the first time the shard needs its node and lives while the node is in
//! the view. Its task connects, exchanges hellos, then tells the engine (`up_reset`) so every
//! subscriber of the node's topics is asked for again — requests sent while the link was down
//! are dropped, and publishes fail `Unavailable` at once, never wait unbounded. Answers are
//! matched by request id: publish ids have the top bit set, subscribe positions use the
//! engine's ids.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use fanfare_core::cluster::{NodeKey, Replay, UpReq, Upstream};
use fanfare_core::presence::PresenceDelta;
use fanfare_core::{
    ClusterPort, Epoch, Message, PresenceState, PublishError, Published, Seq, SubscribeError,
    TaskKind, TopicKey,
};
use fanfare_proto::message::{ErrorCode, PRESENCE_PAGE_MAX};
use fanfare_proto::LinkMsg;
use glommio::net::TcpStream;

use super::config::ClusterConfig;
use super::view::ClusterView;
use super::wire::{self, Encoder, Frame, FrameReader, LinkEnd, LinkQueue};
use crate::io::Io;
use crate::metrics::{self, NetStats};

/// Publish request ids have this bit set (engine request ids never do).
const PUBLISH_ID_BIT: u64 = 1 << 63;
/// Presence query ids have this bit set.
const QUERY_ID_BIT: u64 = 1 << 62;
/// Reconnect back-off, first and largest.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// An answer being assembled: a discontinuity and replay batches come before the
/// `Subscribed` that ends it.
#[derive(Default)]
struct Partial {
    gap: Option<(Seq, Seq, Epoch)>,
    items: Vec<Message>,
}

type QueryReply = flume::Sender<Result<PresenceState, SubscribeError>>;

struct Link {
    node: NodeKey,
    /// The storage node's id (its hello and, with TLS, its certificate must name it).
    id: String,
    addr: Cell<std::net::SocketAddr>,
    /// Hello exchanged; requests may be sent.
    up: Cell<bool>,
    /// Connecting (publishes wait in the queue for the hello).
    connecting: Cell<bool>,
    /// The node left the view: the task ends.
    gone: Cell<bool>,
    q: RefCell<Rc<LinkQueue>>,
    publishes: RefCell<AHashMap<u64, flume::Sender<Result<Published, PublishError>>>>,
    queries: RefCell<AHashMap<u64, QueryReply>>,
    partials: RefCell<AHashMap<u64, Partial>>,
}

/// One shard's links.
pub(crate) struct Links {
    shard: ClusterPort,
    cfg: Arc<ClusterConfig>,
    node_id: String,
    stats: Arc<NetStats>,
    enc: Rc<Encoder>,
    view: RefCell<Arc<ClusterView>>,
    links: RefCell<AHashMap<NodeKey, Rc<Link>>>,
    next_publish: Cell<u64>,
    me: std::rc::Weak<Links>,
}

impl Links {
    pub fn new(
        shard: ClusterPort,
        cfg: Arc<ClusterConfig>,
        node_id: String,
        stats: Arc<NetStats>,
        view: Arc<ClusterView>,
    ) -> Rc<Self> {
        Rc::new_cyclic(|me| Links {
            shard,
            cfg,
            node_id,
            enc: Rc::new(Encoder::new(stats.clone())),
            stats,
            view: RefCell::new(view),
            links: RefCell::new(AHashMap::new()),
            next_publish: Cell::new(1),
            me: me.clone(),
        })
    }

    /// A new view: links to nodes that left end; addresses are refreshed.
    pub fn set_view(&self, view: Arc<ClusterView>) {
        let mut links = self.links.borrow_mut();
        links.retain(|key, link| match view.addr_of(*key) {
            Some(addr) => {
                link.addr.set(addr);
                true
            }
            None => {
                link.gone.set(true);
                link.q.borrow().close();
                false
            }
        });
        drop(links);
        *self.view.borrow_mut() = view;
    }

    fn link(&self, node: NodeKey) -> Option<Rc<Link>> {
        if let Some(l) = self.links.borrow().get(&node) {
            return Some(l.clone());
        }
        let (id, addr) = {
            let view = self.view.borrow();
            let m = view.storage_node(node)?;
            (m.id.clone(), m.addr)
        };
        let link = Rc::new(Link {
            node,
            id,
            addr: Cell::new(addr),
            up: Cell::new(false),
            connecting: Cell::new(true),
            gone: Cell::new(false),
            q: RefCell::new(Rc::new(LinkQueue::default())),
            publishes: RefCell::new(AHashMap::new()),
            queries: RefCell::new(AHashMap::new()),
            partials: RefCell::new(AHashMap::new()),
        });
        self.links.borrow_mut().insert(node, link.clone());
        let me = self.me.upgrade()?;
        let tasks = me.shard.shard().tasks();
        tasks
            .spawn(TaskKind::Link, run_link(me, link.clone()))
            .detach();
        Some(link)
    }

    fn fail_publishes(&self, link: &Link) {
        let pending: Vec<_> = link
            .publishes
            .borrow_mut()
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in pending {
            metrics::inc(&self.stats.cluster_publishes_unavailable);
            let _ = r.try_send(Err(PublishError::Unavailable));
        }
        let queries: Vec<_> = link.queries.borrow_mut().drain().map(|(_, r)| r).collect();
        for r in queries {
            let _ = r.try_send(Err(SubscribeError::Unavailable));
        }
    }

    fn next_id(&self, bit: u64) -> u64 {
        let id = self.next_publish.get();
        self.next_publish.set(id + 1);
        id | bit
    }
}

/// Sends a presence change in frames of at most [`PRESENCE_PAGE_MAX`] joins and leaves (the
/// first carries the reset and the count).
fn push_presence(q: &LinkQueue, enc: &Encoder, key: &TopicKey, d: PresenceDelta) {
    let mut joins = d.joins.into_iter().map(|m| crate::presence::member_msg(&m));
    let mut leaves = d.leaves.into_iter().map(|m| m.0);
    let (mut reset, mut count) = (d.reset, d.count);
    loop {
        let j: Vec<_> = joins.by_ref().take(PRESENCE_PAGE_MAX).collect();
        let l: Vec<_> = leaves.by_ref().take(PRESENCE_PAGE_MAX).collect();
        let last = j.len() < PRESENCE_PAGE_MAX && l.len() < PRESENCE_PAGE_MAX;
        q.push(Frame::Own(enc.frame(&LinkMsg::Presence {
            namespace: key.namespace_name(),
            topic: key.topic_name(),
            reset,
            count,
            joins: j,
            leaves: l,
        })));
        if last {
            return;
        }
        (reset, count) = (false, 0);
    }
}

impl Upstream for Links {
    fn send(&self, node: NodeKey, req: UpReq) {
        let Some(link) = self.link(node) else {
            match req {
                UpReq::Publish { reply, .. } => {
                    metrics::inc(&self.stats.cluster_publishes_unavailable);
                    let _ = reply.try_send(Err(PublishError::Unavailable));
                }
                UpReq::PresenceQuery { reply, .. } => {
                    let _ = reply.try_send(Err(SubscribeError::Unavailable));
                }
                _ => {}
            }
            return;
        };
        let q = link.q.borrow().clone();
        match req {
            UpReq::Request { key, start, id } => {
                if link.up.get() {
                    link.partials.borrow_mut().insert(id, Partial::default());
                    q.push(Frame::Own(self.enc.frame(&LinkMsg::Interest {
                        request_id: id,
                        namespace: key.namespace_name(),
                        topic: key.topic_name(),
                        subscribe: true,
                        from: start,
                    })));
                }
            }
            UpReq::Drop { key } => {
                if link.up.get() {
                    q.push(Frame::Own(self.enc.frame(&LinkMsg::Interest {
                        request_id: 0,
                        namespace: key.namespace_name(),
                        topic: key.topic_name(),
                        subscribe: false,
                        from: fanfare_core::Start::Latest,
                    })));
                }
            }
            UpReq::Publish {
                key,
                payload,
                meta,
                reply,
            } => {
                // Before the first hello the publish waits in the queue (sent once the link is
                // up, failed if it does not come up); after a drop it fails at once.
                let waiting = link.publishes.borrow().len();
                let open = link.up.get() || link.connecting.get();
                if !open || q.is_closed() || waiting >= self.cfg.link_publishes_in_flight_max {
                    metrics::inc(&self.stats.cluster_publishes_unavailable);
                    let _ = reply.try_send(Err(PublishError::Unavailable));
                    return;
                }
                let id = self.next_id(PUBLISH_ID_BIT);
                link.publishes.borrow_mut().insert(id, reply);
                q.push(Frame::Own(self.enc.frame(&LinkMsg::Publish {
                    request_id: id,
                    namespace: key.namespace_name(),
                    topic: key.topic_name(),
                    payload,
                    publisher_id: meta.publisher.map(|p| p.to_string()),
                    idempotency_key: meta.idempotency_key.map(|k| k.to_string()),
                })));
            }
            // Dropped while the link is down: `up_reset` sends every share whole.
            UpReq::Presence { key, delta } => {
                if link.up.get() {
                    push_presence(&q, &self.enc, &key, delta);
                }
            }
            UpReq::PresenceQuery {
                key,
                q: query,
                reply,
            } => {
                let waiting = link.queries.borrow().len();
                let open = link.up.get() || link.connecting.get();
                if !open || q.is_closed() || waiting >= self.cfg.link_fetches_in_flight_max {
                    let _ = reply.try_send(Err(SubscribeError::Unavailable));
                    return;
                }
                let id = self.next_id(QUERY_ID_BIT);
                link.queries.borrow_mut().insert(id, reply);
                q.push(Frame::Own(self.enc.frame(&LinkMsg::PresenceQuery {
                    request_id: id,
                    namespace: key.namespace_name(),
                    topic: key.topic_name(),
                    members: query.members,
                    after: query.after,
                    limit: query.limit as u32,
                })));
            }
        }
    }
}

async fn run_link(links: Rc<Links>, link: Rc<Link>) {
    // glommio may run a spawned task at once, and we are spawned from inside the engine
    // (`Upstream::send`, with the shard's state borrowed): step out first.
    futures_lite::future::yield_now().await;
    let mut backoff = BACKOFF_MIN;
    let mut stop = Box::pin(links.shard.shard().shutdown_signal());
    let refusal_log = wire::LogGate::default();
    loop {
        if link.gone.get() {
            break;
        }
        let addr = link.addr.get();
        link.connecting.set(true);
        let attempt = futures_lite::future::or(
            async {
                let timeout = links.cfg.link_connect_timeout;
                let tcp = wire::within(timeout, "connect", async {
                    TcpStream::connect(addr)
                        .await
                        .map_err(|e| LinkEnd::Io(e.into()))
                })
                .await?;
                let _ = tcp.set_nodelay(true);
                match &links.cfg.tls {
                    None => session(&links, &link, tcp).await,
                    Some(tls) => {
                        let s = wire::within(timeout, "TLS handshake", async {
                            tls.connect(&link.id, tcp).await.map_err(LinkEnd::Auth)
                        })
                        .await?;
                        session(&links, &link, s).await
                    }
                }
            },
            async {
                (&mut stop).await;
                Err(LinkEnd::Closed)
            },
        )
        .await;
        let was_up = link.up.replace(false);
        link.connecting.set(false);
        if was_up {
            metrics::dec(&links.stats.cluster_links_up);
        }
        links.fail_publishes(&link);
        link.partials.borrow_mut().clear();
        // A fresh queue for the next connection (the old one's writer is done).
        let q = Rc::new(LinkQueue::default());
        *link.q.borrow_mut() = q;
        if link.gone.get() || links.shard.shard().is_closing() {
            break;
        }
        if !was_up {
            // Never came up: clients waiting for a first answer are told now.
            links.shard.up_unreachable(link.node);
        }
        match attempt {
            Ok(()) => {}
            Err(e) => {
                metrics::inc(&links.stats.cluster_link_failures);
                if matches!(e, LinkEnd::Auth(_)) {
                    metrics::inc(&links.stats.cluster_link_auth_failures);
                    if refusal_log.open(wire::REFUSAL_LOG_EVERY) {
                        tracing::warn!(node = %addr, error = %e, "link to storage node refused (logged at most every 10 s; see fanfare_net_cluster_link_auth_failures_total)");
                    }
                } else if was_up {
                    tracing::warn!(node = %addr, error = %e, "link to storage node lost");
                } else if refusal_log.open(wire::REFUSAL_LOG_EVERY) {
                    tracing::warn!(node = %addr, error = %e, "link to storage node failed (logged at most every 10 s; see fanfare_net_cluster_link_failures_total)");
                }
            }
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    link.q.borrow().close();
    links.fail_publishes(&link);
}

async fn session<S: Io>(links: &Rc<Links>, link: &Rc<Link>, stream: S) -> Result<(), LinkEnd> {
    let (r, mut w) = futures_lite::io::split(stream);
    let mut reader = FrameReader::new(r, links.cfg.link_frame_bytes_max, links.stats.clone());
    let shard = links.shard.shard().id().0;
    let hello = wire::hello(&mut reader, &mut w, &links.enc, &links.node_id, shard);
    let peer = wire::within(links.cfg.link_connect_timeout, "hello", hello).await?;
    if peer != link.id {
        // Another node answers at the address (a stale view): never mix their topics up.
        return Err(LinkEnd::Protocol(format!(
            "expected node {:?} at {}, found {peer:?}",
            link.id,
            link.addr.get()
        )));
    }
    link.up.set(true);
    metrics::inc(&links.stats.cluster_link_connects);
    metrics::add(&links.stats.cluster_links_up, 1);
    tracing::info!(node = %link.addr.get(), shard, "link to storage node up");
    // Everything asked before is lost or stale: ask again for every subscriber.
    links.shard.up_reset(link.node);
    let q = link.q.borrow().clone();
    let writer = wire::write_loop(q.clone(), w, links.stats.clone(), || {});
    let read = async {
        loop {
            let msg = reader.next().await?;
            on_message(links, link, msg)?;
        }
    };
    let r = futures_lite::future::or(read, async {
        writer.await;
        Err(LinkEnd::Closed)
    })
    .await;
    q.close();
    r
}

fn on_message(links: &Links, link: &Link, msg: LinkMsg) -> Result<(), LinkEnd> {
    match msg {
        LinkMsg::PublishAck {
            request_id,
            epoch,
            seq,
            durability,
        } => {
            if let Some(r) = link.publishes.borrow_mut().remove(&request_id) {
                let _ = r.try_send(Ok(Published {
                    epoch: Epoch(epoch),
                    seq: Seq(seq),
                    durability,
                }));
            }
        }
        LinkMsg::Error {
            request_id,
            code,
            text,
        } => {
            if let Some(r) = link.publishes.borrow_mut().remove(&request_id) {
                let e = match code {
                    ErrorCode::Unavailable | ErrorCode::ShuttingDown => PublishError::Unavailable,
                    code => PublishError::Owner { code, reason: text },
                };
                let _ = r.try_send(Err(e));
            } else if let Some(r) = link.queries.borrow_mut().remove(&request_id) {
                let e = match code {
                    ErrorCode::Unavailable | ErrorCode::ShuttingDown => SubscribeError::Unavailable,
                    code => SubscribeError::Owner { code, reason: text },
                };
                let _ = r.try_send(Err(e));
            } else if request_id != 0 {
                link.partials.borrow_mut().remove(&request_id);
                let e = match code {
                    ErrorCode::Unavailable | ErrorCode::ShuttingDown => SubscribeError::Unavailable,
                    code => SubscribeError::Owner { code, reason: text },
                };
                links.shard.up_reply(request_id, Err(e));
            }
        }
        LinkMsg::ItemBatch {
            request_id,
            namespace,
            topic,
            epoch,
            items,
        } => {
            // The decoder checked the names.
            let key = fanfare_core::TopicKey::from_names(&namespace, &topic);
            let msgs = items.into_iter().map(|it| {
                Message::new(
                    Epoch(epoch),
                    Seq(it.seq),
                    it.payload,
                    it.publisher_id.map(Arc::from),
                )
            });
            if request_id == 0 {
                for m in msgs {
                    links.shard.up_item(link.node, &key, &m);
                }
            } else if let Some(p) = link.partials.borrow_mut().get_mut(&request_id) {
                // Only answers to requests we sent are kept (bounded by our subscribers).
                p.items.extend(msgs);
            }
        }
        LinkMsg::Discontinuity {
            request_id,
            last_seq,
            new_seq,
            new_epoch,
            ..
        } => {
            // Live discontinuities (request 0) need nothing: the next item shows the gap and
            // each subscriber asks for its own position.
            if let Some(p) = link.partials.borrow_mut().get_mut(&request_id) {
                p.gap = Some((Seq(last_seq), Seq(new_seq), Epoch(new_epoch)));
            }
        }
        LinkMsg::Subscribed {
            request_id,
            epoch,
            next_seq,
        } => {
            let Some(p) = link.partials.borrow_mut().remove(&request_id) else {
                return Ok(()); // superseded by a later request
            };
            links.shard.up_reply(
                request_id,
                Ok(Replay {
                    epoch: Epoch(epoch),
                    start: Seq(next_seq),
                    gap: p.gap,
                    items: p.items,
                    // The storage node pages through its disk before it answers `Subscribed`.
                    more: false,
                }),
            );
        }
        LinkMsg::PresenceEvent {
            namespace,
            topic,
            event,
        } => {
            let key = fanfare_core::TopicKey::from_names(&namespace, &topic);
            let ev = crate::presence::event_of(event);
            links.shard.up_presence_event(link.node, &key, &ev);
        }
        LinkMsg::PresenceState { request_id, state } => {
            if let Some(r) = link.queries.borrow_mut().remove(&request_id) {
                let _ = r.try_send(Ok(crate::presence::state_of(state)));
            }
        }
        _ => {
            return Err(LinkEnd::Protocol(
                "unexpected message from a storage node".into(),
            ))
        }
    }
    Ok(())
}
