//! The admin endpoints (admin right required when authentication is on):
//!
//! - `GET /v1/admin/topics[?prefix=ns/to&limit=N]`: topics in name order with their owner
//!   shard, epoch, last sequence, history size and subscriber count; `total` counts every
//!   match, `truncated` says whether more than `limit` (default 100, at most
//!   [`TOPICS_LIMIT_MAX`]) matched.
//! - `GET /v1/admin/stats`: per-shard load (every network and engine counter) and totals.
//!
//! Shared-nothing: the shard serving the request asks every shard (itself included) over a
//! bounded channel and merges the answers; no shard reads another's state.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fanfare_core::OwnedTopicInfo;
use fanfare_proto::http::query_param;
use serde_json::{json, Map, Value};

use crate::api::reply::json_error;
use crate::auth::Grant;
use crate::ctx::NetCtx;
use crate::hub::{AdminReq, TopicKeys};
use crate::io::{unless, Stop};
use crate::metrics;

/// Default `limit` of `/v1/admin/topics`.
pub const TOPICS_LIMIT_DEFAULT: usize = 100;
/// Largest `limit` of `/v1/admin/topics`.
pub const TOPICS_LIMIT_MAX: usize = 10_000;
/// How long a request waits for every shard's answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers admin questions on this shard until shutdown.
pub(crate) async fn admin_loop(ctx: Rc<NetCtx>, rx: flume::Receiver<AdminReq>) {
    let mut stop: Stop = Box::pin(ctx.shard.shutdown_signal());
    while let Some(Ok(req)) = unless(&mut stop, rx.recv_async()).await {
        match req {
            AdminReq::Owned {
                prefix,
                limit,
                reply,
            } => {
                let _ = reply.try_send(ctx.shard.owned_topics(&prefix, limit));
            }
            AdminReq::Subscribers { keys, reply } => {
                let counts = keys
                    .iter()
                    .map(|(ns, t)| ctx.shard.local_subscribers(ns, t))
                    .collect();
                let _ = reply.try_send(counts);
            }
        }
    }
}

/// Serves an admin request: the status and JSON body.
pub(crate) async fn serve(
    ctx: &Rc<NetCtx>,
    path: &str,
    query: Option<&str>,
    grant: Option<&Grant>,
) -> (u16, String) {
    if ctx.auth_on() && !grant.is_some_and(|g| g.admin) {
        metrics::inc(&ctx.stats.auth_forbidden);
        return (403, json_error("the admin right is required"));
    }
    metrics::inc(&ctx.stats.admin_requests);
    match path {
        "/v1/admin/stats" => (200, stats(ctx).to_string()),
        "/v1/admin/topics" => match topics(ctx, query).await {
            Ok(v) => (200, v.to_string()),
            Err(e) => e,
        },
        "/v1/admin/cluster" => match &ctx.cluster {
            Some(c) => (200, c.view().to_json().to_string()),
            None => (404, json_error("this node is not in a cluster")),
        },
        _ => (404, json_error("no such admin endpoint")),
    }
}

/// Sends one request per shard and collects the answers (any shard missing: 503).
async fn ask_all<T: Send + 'static>(
    ctx: &NetCtx,
    mut make: impl FnMut(flume::Sender<T>) -> AdminReq,
) -> Result<Vec<(usize, T)>, (u16, String)> {
    let senders = ctx.admin.senders();
    let mut waiting = Vec::with_capacity(senders.len());
    for (shard, tx) in senders {
        let (reply, rx) = flume::bounded(1);
        if tx.try_send(make(reply)).is_err() {
            return Err((503, json_error("admin requests queued; retry shortly")));
        }
        waiting.push((shard, rx));
    }
    let mut out = Vec::with_capacity(waiting.len());
    for (shard, rx) in waiting {
        let got = futures_lite::future::or(async { rx.recv_async().await.ok() }, async {
            glommio::timer::sleep(ADMIN_TIMEOUT).await;
            None
        })
        .await;
        match got {
            Some(v) => out.push((shard, v)),
            None => return Err((503, json_error(&format!("shard {shard} did not answer")))),
        }
    }
    Ok(out)
}

async fn topics(ctx: &NetCtx, query: Option<&str>) -> Result<Value, (u16, String)> {
    let prefix: Arc<str> = Arc::from(query_param(query, "prefix").unwrap_or(""));
    let limit = match query_param(query, "limit") {
        None => TOPICS_LIMIT_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=TOPICS_LIMIT_MAX).contains(&n) => n,
            _ => {
                return Err((
                    400,
                    json_error(&format!("limit must be 1 to {TOPICS_LIMIT_MAX}")),
                ))
            }
        },
    };
    let owned = ask_all(ctx, |reply| AdminReq::Owned {
        prefix: prefix.clone(),
        limit,
        reply,
    })
    .await?;
    let total: usize = owned.iter().map(|(_, (n, _))| n).sum();
    let mut rows: Vec<(usize, OwnedTopicInfo)> = owned
        .into_iter()
        .flat_map(|(shard, (_, infos))| infos.into_iter().map(move |i| (shard, i)))
        .collect();
    rows.sort_by(|a, b| (&a.1.namespace, &a.1.topic).cmp(&(&b.1.namespace, &b.1.topic)));
    rows.truncate(limit);
    let keys: TopicKeys = Arc::new(
        rows.iter()
            .map(|(_, i)| (i.namespace.clone(), i.topic.clone()))
            .collect(),
    );
    let counts = ask_all(ctx, |reply| AdminReq::Subscribers {
        keys: keys.clone(),
        reply,
    })
    .await?;
    let topics: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (shard, t))| {
            let subscribers: usize = counts
                .iter()
                .map(|(_, c)| c.get(i).copied().unwrap_or(0))
                .sum();
            json!({
                "namespace": t.namespace,
                "topic": t.topic,
                "owner_shard": shard,
                "epoch": t.epoch,
                "last_seq": t.last_seq,
                "history_messages": t.history_messages,
                "history_bytes": t.history_bytes,
                "subscribers": subscribers,
                "subscriber_shards": t.subscriber_shards,
            })
        })
        .collect();
    Ok(json!({
        "topics": topics,
        "total": total,
        "truncated": total > rows.len(),
    }))
}

fn stats(ctx: &NetCtx) -> Value {
    let mut shards = Vec::new();
    let mut totals: Map<String, Value> = Map::new();
    for view in ctx.registry.shard_views() {
        let mut net = Map::new();
        for (k, v) in &view.net {
            net.insert((*k).to_owned(), json!(v));
            add(&mut totals, &format!("net_{k}"), *v);
        }
        let mut engine = Map::new();
        for (k, v) in &view.engine {
            engine.insert((*k).to_owned(), json!(v));
            add(&mut totals, &format!("engine_{k}"), *v);
        }
        shards.push(json!({
            "shard": view.shard,
            "net": net,
            "engine": engine,
            "delivery_latency_us": {
                "p50": view.latency_p50_us,
                "p99": view.latency_p99_us,
                "max": view.latency_max_us,
            },
        }));
    }
    json!({
        "shards": shards,
        "totals": totals,
        "auth": ctx.auth_on(),
    })
}

fn add(m: &mut Map<String, Value>, k: &str, v: u64) {
    let cur = m.get(k).and_then(Value::as_u64).unwrap_or(0);
    m.insert(k.to_owned(), json!(cur + v));
}
