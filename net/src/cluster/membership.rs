//! SWIM membership on shard 0: `foca` (sans-IO) driven by one glommio UDP socket.
//!
//! foca decides everything (whom to probe, when to suspect, when a member is down, what to
//! gossip); this module only moves its datagrams, delivers its timers and turns its
//! notifications into [`ClusterView`]s.
//!
//! Every second a node announces itself to every configured seed that is not a live member
//! and to every member it lost in the last [`LOST_RETRY`], so start order does not matter and
//! a restarted node (a seed restarted without `--seed` included) is found again within about a
//! second of starting. A node serves no topic as a cluster of one until it has heard from
//! another node or [`JOIN_GRACE`] passed: until then its view has no storage node, and its
//! clients' publishes are refused `Unavailable` rather than ordered by an owner the cluster
//! does not know.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare_core::{TaskKind, Tasks};
use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use glommio::net::UdpSocket;
use rand::SeedableRng;

use super::config::Roles;
use super::view::{ClusterShared, ClusterView, Member};
use crate::metrics::{self, NetStats};

/// Largest gossip datagram.
const PACKET_BYTES_MAX: usize = 1400;
/// Gossip events waiting for the loop. Datagrams past it are dropped (UDP is lossy and SWIM
/// tolerates loss, counted in `cluster_gossip_dropped`); timers wait for room, never dropped.
const EVENTS_MAX: usize = 4096;
/// How often a node announces itself to seeds that are not live members and to lost members.
const REANNOUNCE: Duration = Duration::from_secs(1);
/// How long a node keeps announcing itself to a member it lost (it may come back restarted,
/// at the same address, knowing nobody).
pub(crate) const LOST_RETRY: Duration = Duration::from_secs(600);
/// Lost members remembered for announcing (the oldest is forgotten past it).
const LOST_MAX: usize = 1024;
/// How long a clustered node waits to hear from other nodes before it serves topics as a
/// cluster of one (a restarted seed has no seeds, but the nodes that knew it announce
/// themselves to it every second).
pub(crate) const JOIN_GRACE: Duration = Duration::from_secs(3);

enum Ev {
    Data(Vec<u8>),
    Timer(Timer<Member>),
    Announce,
    Stop,
}

/// A placeholder identity for a seed we only know by address (foca learns the real one from
/// its answer).
fn seed_identity(addr: SocketAddr) -> Member {
    Member {
        id: String::new(),
        addr,
        roles: Roles {
            router: false,
            storage: false,
        },
        generation: 0,
    }
}

fn foca_config(shared: &ClusterShared) -> foca::Config {
    let n = NonZeroU32::new(shared.cfg.seeds.len() as u32 + 8).unwrap_or(NonZeroU32::MIN);
    let mut c = foca::Config::new_lan(n);
    c.probe_period = shared.cfg.probe_interval;
    c.probe_rtt = shared.cfg.probe_timeout.min(shared.cfg.probe_interval / 2);
    c.suspect_to_down_after = shared.cfg.suspect_timeout;
    // Room for the tag when gossip is authenticated.
    let max = PACKET_BYTES_MAX - super::tls::GOSSIP_TAG_BYTES;
    c.max_packet_size = std::num::NonZeroUsize::new(max).unwrap_or(c.max_packet_size);
    c
}

/// Runs the gossip until `stop` resolves (then leaves the cluster politely).
pub(crate) async fn run(
    shared: Arc<ClusterShared>,
    sock: UdpSocket,
    stats: Arc<NetStats>,
    stop: impl std::future::Future<Output = ()> + 'static,
    tasks: Tasks,
) {
    let sock = Rc::new(sock);
    let (tx, rx) = flume::bounded::<Ev>(EVENTS_MAX);
    let me = shared.me.clone();
    let rng = rand::rngs::StdRng::seed_from_u64(me.generation ^ 0x9e37_79b9_7f4a_7c15);
    let mut foca = Foca::new(me.clone(), foca_config(&shared), rng, PostcardCodec);
    let mut rt = AccumulatingRuntime::new();
    let mut m = Members::default();
    let started = Instant::now();

    // Datagrams in.
    {
        let sock = sock.clone();
        let tx = tx.clone();
        let stats = stats.clone();
        let key = shared.cfg.gossip_key.clone();
        tasks.spawn(TaskKind::MembershipWork, async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let data = match &key {
                            None => &buf[..n],
                            Some(k) => match k.open(&buf[..n]) {
                                Some(d) => d,
                                None => {
                                    metrics::inc(&stats.cluster_gossip_unauthenticated);
                                    tracing::debug!(from = %from, "gossip datagram without a valid tag dropped");
                                    continue;
                                }
                            },
                        };
                        match tx.try_send(Ev::Data(data.to_vec())) {
                        Ok(()) => {}
                        Err(flume::TrySendError::Full(_)) => {
                            metrics::inc(&stats.cluster_gossip_dropped);
                        }
                        Err(flume::TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip receive failed");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .detach();
    }
    // Re-announcing while alone, and the stop signal.
    {
        let tx = tx.clone();
        tasks
            .spawn(TaskKind::MembershipWork, async move {
                loop {
                    glommio::timer::sleep(REANNOUNCE).await;
                    if tx.send_async(Ev::Announce).await.is_err() {
                        return;
                    }
                }
            })
            .detach();
    }
    {
        let tx = tx.clone();
        tasks
            .spawn(TaskKind::MembershipWork, async move {
                stop.await;
                let _ = tx.send_async(Ev::Stop).await;
            })
            .detach();
    }

    for seed in &shared.cfg.seeds {
        if *seed != me.addr {
            let _ = foca.announce(seed_identity(*seed), &mut rt);
        }
    }
    publish(&shared, &m, &stats);
    loop {
        drain(&mut rt, &sock, &tx, &mut m, &shared, &stats, &tasks).await;
        let Ok(ev) = rx.recv_async().await else {
            return;
        };
        let r = match ev {
            Ev::Data(d) => foca.handle_data(&d, &mut rt),
            Ev::Timer(t) => foca.handle_timer(t, &mut rt),
            Ev::Announce => {
                m.lost.retain(|_, since| since.elapsed() < LOST_RETRY);
                let targets: Vec<SocketAddr> = shared
                    .cfg
                    .seeds
                    .iter()
                    .chain(m.lost.keys())
                    .filter(|a| **a != me.addr && !m.alive.contains_key(a))
                    .copied()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for addr in targets {
                    let _ = foca.announce(seed_identity(addr), &mut rt);
                }
                if !m.joined && started.elapsed() >= JOIN_GRACE {
                    tracing::warn!(
                        "no other node answered within {} s: serving as a cluster of one",
                        JOIN_GRACE.as_secs()
                    );
                    m.joined = true;
                    publish(&shared, &m, &stats);
                }
                Ok(())
            }
            Ev::Stop => {
                let _ = foca.leave_cluster(&mut rt);
                // Leaving makes foca report this node defunct: expected, not news.
                while rt.to_notify().is_some() {}
                drain(&mut rt, &sock, &tx, &mut m, &shared, &stats, &tasks).await;
                return;
            }
        };
        if let Err(e) = r {
            // Malformed or foreign datagrams: foca refuses them; nothing else to do.
            tracing::debug!(error = %e, "gossip input refused");
        }
    }
}

/// What this node knows of the others.
#[derive(Default)]
struct Members {
    /// Live members, by address.
    alive: BTreeMap<SocketAddr, Member>,
    /// Members declared down, and since when (announced to for [`LOST_RETRY`]).
    lost: BTreeMap<SocketAddr, Instant>,
    /// Whether this node has heard from another one (or waited [`JOIN_GRACE`]).
    joined: bool,
}

/// Sends what foca wants sent, schedules its timers and applies its notifications.
async fn drain(
    rt: &mut AccumulatingRuntime<Member>,
    sock: &Rc<UdpSocket>,
    tx: &flume::Sender<Ev>,
    m: &mut Members,
    shared: &Arc<ClusterShared>,
    stats: &Arc<NetStats>,
    tasks: &Tasks,
) {
    let Members {
        alive,
        lost,
        joined,
    } = m;
    let mut changed = false;
    while let Some(n) = rt.to_notify() {
        match n {
            OwnedNotification::MemberUp(m) => {
                tracing::info!(node = %m.id, addr = %m.addr, storage = m.roles.storage, "cluster member up");
                lost.remove(&m.addr);
                alive.insert(m.addr, m);
                *joined = true;
                changed = true;
            }
            OwnedNotification::MemberDown(m)
                if alive
                    .get(&m.addr)
                    .is_some_and(|a| a.generation == m.generation) =>
            {
                tracing::warn!(node = %m.id, addr = %m.addr, "cluster member down");
                alive.remove(&m.addr);
                if lost.len() >= LOST_MAX {
                    if let Some(oldest) = lost.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                        lost.remove(&oldest);
                    }
                }
                lost.insert(m.addr, Instant::now());
                changed = true;
            }
            OwnedNotification::Rename(old, new) if alive.contains_key(&old.addr) => {
                tracing::info!(node = %new.id, addr = %new.addr, "cluster member restarted");
                alive.insert(new.addr, new);
                changed = true;
            }
            OwnedNotification::Defunct => {
                tracing::warn!("this node was declared down by the cluster");
            }
            _ => {}
        }
    }
    if changed {
        metrics::inc(&stats.cluster_membership_changes);
        publish(shared, m, stats);
    }
    while let Some((after, timer)) = rt.to_schedule() {
        let tx = tx.clone();
        tasks
            .spawn(TaskKind::MembershipWork, async move {
                glommio::timer::sleep(after).await;
                let _ = tx.send_async(Ev::Timer(timer)).await;
            })
            .detach();
    }
    while let Some((to, data)) = rt.to_send() {
        let sealed;
        let out: &[u8] = match &shared.cfg.gossip_key {
            None => &data,
            Some(k) => {
                let mut d = Vec::with_capacity(data.len() + super::tls::GOSSIP_TAG_BYTES);
                d.extend_from_slice(&data);
                k.seal(&mut d);
                sealed = d;
                &sealed
            }
        };
        if let Err(e) = sock.send_to(out, to.addr).await {
            tracing::debug!(to = %to.addr, error = %e, "gossip send failed");
        }
    }
}

/// Sends every shard the view of `alive` and this node. Until the node has `joined` (heard
/// from the cluster, or waited [`JOIN_GRACE`]), the view holds no member, so no topic has an
/// owner.
fn publish(shared: &ClusterShared, m: &Members, stats: &NetStats) {
    if !m.joined {
        metrics::set(&stats.cluster_members, 0);
        metrics::set(&stats.cluster_storage_nodes, 0);
        shared.publish(Arc::new(ClusterView {
            this: Some(shared.me.clone()),
            members: Vec::new(),
        }));
        return;
    }
    let mut members: Vec<Member> = m.alive.values().cloned().collect();
    members.push(shared.me.clone());
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let storage = members.iter().filter(|m| m.roles.storage).count();
    metrics::set(&stats.cluster_members, members.len() as u64);
    metrics::set(&stats.cluster_storage_nodes, storage as u64);
    shared.publish(Arc::new(ClusterView {
        this: Some(shared.me.clone()),
        members,
    }));
}
