//! Counters of the network front, per shard, and the Prometheus text exposition.
//!
//! Each shard writes only its own [`NetStats`] (relaxed atomics, no locks); a scrape reads
//! every shard's copy and the engine's [`fanfare_core::ShardStats`], so scraping never
//! takes a lock the data path needs.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fanfare_core::{ShardStats, TaskStats};
use hdrhistogram::Histogram;

mod process;

macro_rules! net_counters {
    // Fields carry only doc comments (`#[doc = ".."]`): each becomes its metric's HELP line.
    ($($(#[doc = $doc:literal])* $field:ident: $kind:literal,)*) => {
        /// Counters of one shard's network front.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct NetStats {
            $($(#[doc = $doc])* pub $field: AtomicU64,)*
        }

        impl NetStats {
            /// Each counter's name and its doc comment, for HELP lines.
            const HELP: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), concat!($($doc, "\n",)*)),)*];

            fn stored(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($field), $kind, self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

net_counters! {
    /// Connections open now, in any state (what `connections_max` limits). Always the sum
    /// of the five state gauges: `connections_handshake`, `_ws`, `_http`, `_http_idle`, `_h2`.
    connections_open: "gauge",
    /// WebSocket connections open now.
    connections_ws: "gauge",
    /// HTTP/1.1 connections in a request now.
    connections_http: "gauge",
    /// HTTP/1.1 connections between requests (keep-alive) now.
    connections_http_idle: "gauge",
    /// HTTP/2 connections open now.
    connections_h2: "gauge",
    /// Accepts that failed (out of file descriptors, mostly); the listener backs off.
    accept_errors: "counter",
    /// HTTP/2 streams reset because they were closed (too slow, token expired) while the
    /// client's flow-control window was shut.
    h2_streams_reset: "counter",
    /// Request bodies not received within `body_timeout` (408).
    limit_body_time: "counter",
    /// WebSocket messages not completed within `message_timeout` (close 1008).
    limit_message_time: "counter",
    /// Connections accepted.
    connections_accepted: "counter",
    /// Connections that completed a TLS handshake.
    connections_tls: "counter",
    /// TLS handshakes that failed.
    tls_handshake_errors: "counter",
    /// Connections refused by the connection limit.
    connections_refused: "counter",
    /// Items encoded as WebSocket frames (one per message per shard, however many receive it).
    encodes_ws: "counter",
    /// Items encoded as SSE events.
    encodes_sse: "counter",
    /// Items encoded as length-prefixed frames.
    encodes_frames: "counter",
    /// Items queued on connections (one per receiving subscription).
    deliveries: "counter",
    /// Write system calls (each carries every frame queued meanwhile).
    writes: "counter",
    /// Bytes written to sockets.
    bytes_out: "counter",
    /// Bytes read from sockets.
    bytes_in: "counter",
    /// Messages published through this shard's connections.
    publishes: "counter",
    /// Connections whose send queue was full (their subscriptions lag).
    slow_events: "counter",
    /// Connections closed for staying behind past the deadline.
    closed_slow: "counter",
    /// Times a shard gave freed memory back to the system after a wave of connections closed
    /// (`memory::TrimPolicy`; counted whether or not whole pages were free to return).
    memory_trims: "counter",
    /// Requests refused: message over the size limit.
    limit_message_size: "counter",
    /// Requests refused: header block over the limit.
    limit_header_size: "counter",
    /// Requests refused: subscriptions per connection.
    limit_subscriptions: "counter",
    /// Connections closed: handshake took too long.
    limit_handshake_time: "counter",
    /// Connections closed: idle too long.
    limit_idle: "counter",
    /// Connections closed: no pong in time.
    limit_pong: "counter",
    /// Requests refused: publishes in flight per connection at the limit (backpressure waits).
    limit_publish_window: "counter",
    /// Protocol errors (malformed frames or messages).
    protocol_errors: "counter",
    /// Tokens accepted (connect, first message, refresh, HTTP request).
    auth_ok: "counter",
    /// Authentication failures: no token where one is required.
    auth_failures_missing: "counter",
    /// Authentication failures: malformed token, refused algorithm, unknown key id, bad
    /// signature or bad claims.
    auth_failures_invalid: "counter",
    /// Authentication failures: token expired or not valid yet.
    auth_failures_expired: "counter",
    /// WebSocket connections that never authenticated within the handshake time.
    auth_failures_timeout: "counter",
    /// Requests refused without a token check: the IP is over its failure budget.
    auth_rate_limited: "counter",
    /// Publishes and subscribes the token did not grant.
    auth_forbidden: "counter",
    /// Connections closed because their token expired and was not refreshed in time.
    auth_expired_closed: "counter",
    /// IPs with recent authentication failures remembered by this shard.
    auth_tracked_ips: "gauge",
    /// WebSocket upgrades refused by the Origin allow-list.
    origin_rejected: "counter",
    /// Admin requests served.
    admin_requests: "counter",
    /// Presence events queued on client connections.
    presence_events_out: "counter",
    /// Presence queries answered (WebSocket and HTTP).
    presence_queries: "counter",
    /// Cluster members alive in this node's view (shard 0 runs the gossip).
    cluster_members: "gauge",
    /// Storage nodes alive in this node's view.
    cluster_storage_nodes: "gauge",
    /// Gossip datagrams dropped because the gossip loop was behind (`EVENTS_MAX`).
    cluster_gossip_dropped: "counter",
    /// Storage side: link connections refused by `link_connections_max`.
    cluster_links_refused: "counter",
    /// Membership changes seen (member up, down or renamed).
    cluster_membership_changes: "counter",
    /// Router side: links to storage nodes up now (at most one per storage node per shard).
    cluster_links_up: "gauge",
    /// Router side: link connections established.
    cluster_link_connects: "counter",
    /// Router side: link connections that failed or dropped.
    cluster_link_failures: "counter",
    /// Router side: publishes failed because the owner was unreachable.
    cluster_publishes_unavailable: "counter",
    /// Storage side: links from router shards served now.
    cluster_links_served: "gauge",
    /// Storage side: links closed because their router left the cluster view (its host
    /// died or it is partitioned away): the members it held leave with them.
    cluster_links_closed_dead: "counter",
    /// Storage side: live item frames queued on links (one per message per router shard).
    cluster_link_items_out: "counter",
    /// Storage side: links closed because the router stayed behind (a slow router).
    cluster_link_closed_slow: "counter",
    /// Frames sent on node links.
    cluster_link_frames_out: "counter",
    /// Frames received on node links.
    cluster_link_frames_in: "counter",
    /// Node links refused by TLS: failed handshakes (no or foreign certificate, plaintext
    /// peer) and certificates that do not name the peer's node id (both sides).
    cluster_link_auth_failures: "counter",
    /// Gossip datagrams dropped for a missing or wrong tag (`gossip_key_file`).
    cluster_gossip_unauthenticated: "counter",
}

impl NetStats {
    /// Every counter and gauge, with the derived `connections_handshake` (accepted
    /// connections whose protocol is not settled yet: TLS handshake, first request head,
    /// HTTP/2 preface and settings).
    fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut f = self.stored();
        let get = |name: &str| f.iter().find(|(n, _, _)| *n == name).map_or(0, |x| x.2);
        let settled = get("connections_ws")
            + get("connections_http")
            + get("connections_http_idle")
            + get("connections_h2");
        let handshake = get("connections_open").saturating_sub(settled);
        f.push(("connections_handshake", "gauge", handshake));
        f
    }
}

/// The exposition name of a network counter or gauge: counters end in `_total`, and a unit
/// comes before it (`bytes_in` is `received_bytes_total`).
fn exposed_name(field: &str, kind: &str) -> String {
    let base = match field {
        "bytes_in" => "received_bytes",
        "bytes_out" => "sent_bytes",
        f => f,
    };
    if kind == "counter" {
        format!("fanfare_net_{base}_total")
    } else {
        format!("fanfare_net_{base}")
    }
}

pub(crate) fn inc(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}
pub(crate) fn set(c: &AtomicU64, v: u64) {
    c.store(v, Ordering::Relaxed);
}
pub(crate) fn dec(c: &AtomicU64) {
    c.store(
        c.load(Ordering::Relaxed).saturating_sub(1),
        Ordering::Relaxed,
    );
}

/// One shard's network and engine counters, and its latest latency snapshot.
type ShardCounters = (
    Arc<NetStats>,
    Arc<ShardStats>,
    Arc<Mutex<Histogram<u64>>>,
    Arc<TaskStats>,
);

/// One of a task kind's counts.
type TaskValue = fn(&fanfare_core::TaskCounts) -> u64;

/// Bucket bounds of `fanfare_delivery_latency_seconds`, in microseconds.
const LATENCY_BUCKETS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// A histogram of publish-to-delivery latency in microseconds (1 µs to 60 s, 3 digits).
// Cannot fail: the bounds are constants hdrhistogram accepts (low >= 1, high >= 2 * low,
// at most 5 significant digits), and every shard builds one at start.
#[allow(clippy::expect_used)]
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid histogram bounds")
}

/// One shard's counters at a point in time.
#[derive(Debug, Clone)]
pub struct ShardView {
    /// The shard.
    pub shard: usize,
    /// Network counters by name.
    pub net: Vec<(&'static str, u64)>,
    /// Engine counters by name.
    pub engine: Vec<(&'static str, u64)>,
    /// Publish-to-delivery latency median, microseconds (last snapshot).
    pub latency_p50_us: u64,
    /// Its 99th percentile.
    pub latency_p99_us: u64,
    /// Its maximum.
    pub latency_max_us: u64,
}

/// Every shard's counters, filled in as shards start.
#[derive(Debug, Default)]
pub struct Registry {
    shards: Mutex<Vec<Option<ShardCounters>>>,
    /// Whether the node runs in a cluster: a single node exports no `fanfare_net_cluster_*`
    /// series (they would all read 0 and clutter dashboards).
    clustered: bool,
}

impl Registry {
    pub(crate) fn new(shards: usize, clustered: bool) -> Self {
        Self {
            shards: Mutex::new(vec![None; shards]),
            clustered,
        }
    }

    /// Whether a network counter is exported on this node.
    fn exports(&self, net_field: &str) -> bool {
        self.clustered || !net_field.starts_with("cluster_")
    }

    pub(crate) fn register(
        &self,
        shard: usize,
        net: Arc<NetStats>,
        engine: Arc<ShardStats>,
        latency: Arc<Mutex<Histogram<u64>>>,
        tasks: Arc<TaskStats>,
    ) {
        let mut s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.get_mut(shard) {
            *slot = Some((net, engine, latency, tasks));
        }
    }

    /// Publish-to-delivery latency quantile (in microseconds) over all shards' last snapshots.
    pub fn latency_quantile_us(&self, q: f64) -> u64 {
        let s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = latency_histogram();
        for (_, _, h, _) in s.iter().flatten() {
            let _ = all.add(&*h.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all.value_at_quantile(q)
    }

    /// One counter summed over shards (0 when unknown), for tests and the admin view.
    pub fn total(&self, name: &str) -> u64 {
        // A name both layers count (`deliveries`) means the network's counter.
        self.shard_views()
            .iter()
            .filter_map(|v| v.net.iter().chain(&v.engine).find(|(n, _)| *n == name))
            .map(|(_, v)| v)
            .sum()
    }

    /// Every registered shard's counters and latency quantiles (the admin stats view).
    pub fn shard_views(&self) -> Vec<ShardView> {
        let s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .enumerate()
            .filter_map(|(shard, e)| {
                let (net, eng, h, _) = e.as_ref()?;
                let h = h.lock().unwrap_or_else(|e| e.into_inner());
                Some(ShardView {
                    shard,
                    net: net
                        .fields()
                        .into_iter()
                        .filter(|(n, _, _)| self.exports(n))
                        .map(|(n, _, v)| (n, v))
                        .collect(),
                    engine: eng.snapshot().fields(),
                    latency_p50_us: h.value_at_quantile(0.5),
                    latency_p99_us: h.value_at_quantile(0.99),
                    latency_max_us: h.max(),
                })
            })
            .collect()
    }

    /// The Prometheus text exposition: every counter labelled by shard, the tasks by kind,
    /// the delivery latency histogram, the `process_*` series and `fanfare_build_info`. Every
    /// family has a HELP line (the counter's doc comment) and a TYPE line.
    pub fn render(&self) -> String {
        let s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let mut rows: Vec<(String, &'static str, &'static str, usize, u64)> = Vec::new();
        for (shard, entry) in s.iter().enumerate() {
            let Some((net, eng, _, _)) = entry else {
                continue;
            };
            for (name, kind, v) in net.fields() {
                if self.exports(name) {
                    let help = doc_of(NetStats::HELP, name).unwrap_or(CONNECTIONS_HANDSHAKE_HELP);
                    rows.push((exposed_name(name, kind), kind, help, shard, v));
                }
            }
            for (name, v) in eng.snapshot().fields() {
                let kind = if ENGINE_GAUGES.contains(&name) {
                    "gauge"
                } else {
                    "counter"
                };
                let suffix = if kind == "counter" { "_total" } else { "" };
                let help = doc_of(ShardStats::HELP, name).unwrap_or_default();
                rows.push((
                    format!("fanfare_engine_{name}{suffix}"),
                    kind,
                    help,
                    shard,
                    v,
                ));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.3.cmp(&b.3)));
        let mut last = String::new();
        for (name, kind, help, shard, v) in rows {
            if name != last {
                family(&mut out, &name, kind, help);
                last = name.clone();
            }
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {v}");
        }
        // Every shard's tasks by kind (`fanfare_core::tasks`).
        let families: [(&str, &str, &str, TaskValue); 3] = [
            (
                "fanfare_tasks_running",
                "gauge",
                "Tasks of the kind running on the shard now.",
                |c| c.running,
            ),
            (
                "fanfare_tasks_started_total",
                "counter",
                "Tasks of the kind started on the shard.",
                |c| c.started,
            ),
            (
                "fanfare_tasks_failed_total",
                "counter",
                "Tasks the shard depends on (critical kinds) that ended before shutdown: the \
                 shard is broken.",
                |c| c.failed,
            ),
        ];
        let counts: Vec<(usize, Vec<fanfare_core::TaskCounts>)> = s
            .iter()
            .enumerate()
            .filter_map(|(shard, e)| Some((shard, e.as_ref()?.3.snapshot())))
            .collect();
        for (name, kind, help, value) in families {
            family(&mut out, name, kind, help);
            for (shard, cs) in &counts {
                for c in cs {
                    let task = c.kind.name();
                    let v = value(c);
                    let _ = writeln!(out, "{name}{{shard=\"{shard}\",task=\"{task}\"}} {v}");
                }
            }
        }
        // Publish-to-delivery latency: from the owner ordering a message to a receiving shard
        // encoding it for its connections (once per message, shard and encoding).
        let name = "fanfare_delivery_latency_seconds";
        family(
            &mut out,
            name,
            "histogram",
            "Publish-to-delivery latency: from the owner shard ordering a message to a \
             receiving shard encoding it (once per message, shard and encoding).",
        );
        for (shard, entry) in s.iter().enumerate() {
            let Some((_, _, h, _)) = entry else { continue };
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            for le in LATENCY_BUCKETS_US {
                let n = h.count_between(0, le);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{shard=\"{shard}\",le=\"{}\"}} {n}",
                    le as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {}",
                h.len()
            );
            let sum: f64 = h
                .iter_recorded()
                .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
                .sum();
            let _ = writeln!(out, "{name}_sum{{shard=\"{shard}\"}} {}", sum / 1e6);
            let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {}", h.len());
        }
        drop(s);
        process::render(&mut out);
        let name = "fanfare_build_info";
        family(
            &mut out,
            name,
            "gauge",
            "Always 1; its labels name the running build.",
        );
        let _ = writeln!(
            out,
            "{name}{{version=\"{}\",os=\"{}\",arch=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        out
    }
}

/// Engine counters that are gauges (the rest count up).
const ENGINE_GAUGES: [&str; 8] = [
    "topics",
    "subscriptions",
    "upstream_topics",
    "mesh_publishes_waiting",
    "link_subscriptions",
    "presence_members",
    "storage_bytes",
    "storage_segments",
];

/// HELP of the derived `connections_handshake` gauge (not a stored counter).
const CONNECTIONS_HANDSHAKE_HELP: &str = "Connections whose protocol is not settled yet: TLS \
    handshake, first request head, HTTP/2 preface and settings.";

/// A counter's doc comment from a `HELP` table.
fn doc_of(table: &'static [(&'static str, &'static str)], field: &str) -> Option<&'static str> {
    table.iter().find(|(n, _)| *n == field).map(|(_, d)| *d)
}

/// Writes a family's `# HELP` and `# TYPE` lines. The help text is joined onto one line and
/// escaped as the text format asks (backslash and newline).
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name}");
    for word in help.split_whitespace() {
        let _ = write!(out, " {}", word.replace('\\', "\\\\"));
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}
