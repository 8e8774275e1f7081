//! The crash test's clients, over real WebSocket connections (the blocking
//! `fanfare::client::Client`): a publisher keeping a window of publishes in flight, a live
//! subscriber, and a read-back of a whole topic. Each reports what it saw; `crash/model.rs`
//! judges it.

use std::collections::HashSet;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanfare::client::Client;
use fanfare::proto::{ClientMsg, Durability, ItemMsg, Name, ServerMsg, Start};

use super::model::{parse, payload, Id, ReadBack, NAMESPACE};

/// A publisher or live subscriber with nothing from the server for this long gives up (the
/// broker died without its socket closing, which never should happen).
const SILENCE_MAX: Duration = Duration::from_secs(30);

/// What a publisher saw before its connection ended.
#[derive(Debug, Default)]
pub struct Published {
    /// `(counter, epoch, seq)` of each acknowledged publish.
    pub acked: Vec<(u64, u64, u64)>,
    /// Counters refused, and the error.
    pub refused: Vec<(u64, String)>,
    /// Counters with no answer (in flight at the stop) or refused for now (`ShuttingDown`,
    /// `Overloaded`, ...): a client sends them again.
    pub unanswered: Vec<u64>,
    /// Counters sent: new ones went up to `upto` (exclusive).
    pub upto: u64,
    /// Acks that named another durability than the plan's.
    pub other_durability: u64,
    /// Why it ended.
    pub end: String,
}

/// What a publisher sends: first `retry` again (counters it sent before without an answer),
/// then new counters from `first`; with `keyed`, each with an idempotency key of its own
/// (the same on every try), as `fanfare::client::AsyncClient` does.
pub struct Plan {
    /// Sent again first.
    pub retry: Vec<u64>,
    /// The first new counter.
    pub first: u64,
    /// Publishes carry idempotency keys.
    pub keyed: bool,
    /// What every ack must say (`Synced` with `--fsync always`).
    pub durability: Durability,
}

/// Publishes `topic`'s messages of publisher `p` as `plan` says, with up to `window`
/// unanswered, until the connection ends. Waits at `ready` once connected (or not).
pub fn publish(
    url: &str,
    topic: &str,
    p: u32,
    plan: &Plan,
    window: usize,
    ready: &Barrier,
) -> Published {
    let mut out = Published {
        upto: plan.first,
        ..Published::default()
    };
    let client = Client::connect(url).and_then(|c| {
        c.set_read_timeout(Some(SILENCE_MAX))?;
        Ok(c)
    });
    ready.wait();
    let mut c = match client {
        Ok(c) => c,
        Err(e) => {
            out.end = format!("connect: {e:#}");
            out.unanswered = plan.retry.clone();
            return out;
        }
    };
    let (ns, t) = (
        Name::try_from(NAMESPACE).unwrap(),
        Name::try_from(topic).unwrap(),
    );
    let mut retry = plan.retry.iter().copied();
    let mut in_flight = HashSet::new();
    out.end = loop {
        let mut sent = Ok(());
        while in_flight.len() < window {
            let counter = retry.next().unwrap_or_else(|| {
                out.upto += 1;
                out.upto - 1
            });
            let msg = ClientMsg::Publish {
                // Request ids are counters + 1: an answer names its message.
                request_id: counter + 1,
                namespace: ns.clone(),
                topic: t.clone(),
                payload: Bytes::from(payload(
                    topic,
                    Id {
                        publisher: p,
                        counter,
                    },
                )),
                idempotency_key: plan.keyed.then(|| format!("p{p}-c{counter}")),
            };
            // In flight even when the send fails: part of it, or all, may have left.
            in_flight.insert(counter);
            if let Err(e) = c.send(&msg) {
                sent = Err(format!("send: {e:#}"));
                break;
            }
        }
        if let Err(e) = sent {
            break e;
        }
        match c.recv() {
            Ok(ServerMsg::PublishAck {
                request_id,
                epoch,
                seq,
                durability,
            }) if answered(&mut in_flight, request_id) => {
                if durability != plan.durability {
                    out.other_durability += 1;
                }
                out.acked.push((request_id - 1, epoch, seq));
            }
            Ok(ServerMsg::Error {
                request_id,
                code,
                text,
            }) if answered(&mut in_flight, request_id) => {
                use fanfare::proto::ErrorCode as C;
                let counter = request_id - 1;
                if matches!(
                    code,
                    C::ShuttingDown | C::Overloaded | C::Unavailable | C::StorageUnavailable
                ) {
                    out.unanswered.push(counter);
                }
                out.refused.push((counter, format!("{code:?}: {text}")));
            }
            Ok(_) => {}
            Err(e) => break format!("{e:#}"),
        }
    };
    out.unanswered.extend(in_flight);
    out.unanswered.extend(retry);
    out.unanswered.sort_unstable();
    out
}

/// Whether `request_id` answers a publish in flight (and it is not in flight any more).
fn answered(in_flight: &mut HashSet<u64>, request_id: u64) -> bool {
    request_id
        .checked_sub(1)
        .is_some_and(|counter| in_flight.remove(&counter))
}

/// What a live subscriber saw before its connection ended.
#[derive(Debug, Default)]
pub struct Live {
    /// Where the subscription started: `(epoch, next seq)`.
    pub from: Option<(u64, u64)>,
    /// `(epoch, seq, payload)` of each item, as received.
    pub items: Vec<(u64, u64, Bytes)>,
    /// Discontinuities announced, described.
    pub discontinuities: Vec<String>,
    /// Why it ended.
    pub end: String,
}

/// Subscribes to `topic` from `from` and records every item until the connection ends.
/// Waits at `ready` once subscribed (or not).
pub fn live(url: &str, topic: &str, from: Start, ready: &Barrier) -> Live {
    let mut out = Live::default();
    let sub = Client::connect(url).and_then(|mut c| {
        c.set_read_timeout(Some(SILENCE_MAX))?;
        let m = c.subscribe(NAMESPACE, topic, from)?;
        Ok((c, m))
    });
    ready.wait();
    let mut c = match sub {
        Ok((
            c,
            ServerMsg::Subscribed {
                epoch, next_seq, ..
            },
        )) => {
            out.from = Some((epoch, next_seq));
            c
        }
        Ok((_, m)) => {
            out.end = format!("subscribe answered {m:?}");
            return out;
        }
        Err(e) => {
            out.end = format!("subscribe: {e:#}");
            return out;
        }
    };
    out.end = loop {
        match c.recv() {
            Ok(ServerMsg::Item(it)) => out.items.push((it.epoch, it.seq, it.payload)),
            Ok(ServerMsg::ItemBatch(items)) => out
                .items
                .extend(items.into_iter().map(|it| (it.epoch, it.seq, it.payload))),
            Ok(ServerMsg::Discontinuity {
                last_seq,
                new_seq,
                new_epoch,
                ..
            }) => out.discontinuities.push(format!(
                "discontinuity after seq {last_seq}, continuing at {new_epoch}-{new_seq}"
            )),
            Ok(ServerMsg::SubscriptionClosed { code, text, .. }) => {
                break format!("closed: {code:?}: {text}")
            }
            Ok(_) => {}
            Err(e) => break format!("{e:#}"),
        }
    };
    out
}

/// Reads `topic` back whole: its epoch and head from a subscription at the latest position,
/// then every item from `(epoch, 1)` (the epoch the test knows, if any) up to the head, on a
/// second connection (one connection subscribes to a topic once). The broker takes no
/// publishes meanwhile. `Err` when the broker does not answer in time.
pub fn read_back(
    url: &str,
    topic: &str,
    epoch: Option<u64>,
    deadline: Instant,
) -> Result<ReadBack, String> {
    let connect = || {
        let c = Client::connect(url).map_err(|e| format!("connect: {e:#}"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| format!("{e:#}"))?;
        Ok::<_, String>(c)
    };
    let mut rb = ReadBack::default();
    match connect()?.subscribe(NAMESPACE, topic, Start::Latest) {
        Ok(ServerMsg::Subscribed {
            epoch: now,
            next_seq,
            ..
        }) => (rb.epoch, rb.head) = (now, next_seq - 1),
        other => return Err(format!("subscribe at the latest position: {other:?}")),
    }
    if rb.head == 0 {
        return Ok(rb);
    }
    let mut c = connect()?;
    let from = Start::At {
        epoch: epoch.unwrap_or(rb.epoch),
        seq: 1,
    };
    match c.subscribe(NAMESPACE, topic, from) {
        Ok(ServerMsg::Subscribed {
            epoch: e, next_seq, ..
        }) => {
            if (e, next_seq) != (rb.epoch, 1) {
                rb.problems.push(format!(
                    "subscribed from {e}-{next_seq}, not {}-1",
                    rb.epoch
                ));
            }
        }
        other => return Err(format!("subscribe from the start: {other:?}")),
    }
    let item = |rb: &mut ReadBack, it: ItemMsg| {
        let id = match parse(topic, &it.payload) {
            Ok(id) => Some(id),
            Err(e) => {
                rb.corrupt.push(format!("seq {}: {e}", it.seq));
                None
            }
        };
        rb.items.push((it.epoch, it.seq, id));
    };
    while rb.items.last().map_or(0, |i| i.1) < rb.head {
        if Instant::now() >= deadline {
            return Err(format!(
                "not read back in time: {} items of {}",
                rb.items.len(),
                rb.head
            ));
        }
        match c.recv().map_err(|e| format!("{e:#}"))? {
            ServerMsg::Item(it) => item(&mut rb, it),
            ServerMsg::ItemBatch(items) => items.into_iter().for_each(|it| item(&mut rb, it)),
            ServerMsg::Discontinuity {
                last_seq,
                new_seq,
                new_epoch,
                ..
            } => rb.problems.push(format!(
                "discontinuity after seq {last_seq}, continuing at {new_epoch}-{new_seq}"
            )),
            ServerMsg::Error { text, .. } => return Err(format!("refused: {text}")),
            ServerMsg::SubscriptionClosed { text, .. } => return Err(format!("closed: {text}")),
            _ => {}
        }
    }
    Ok(rb)
}
