//! Catch-up from disk: a subscriber (new, resuming, or lagging) whose start the in-memory
//! history no longer holds, but the shard's log does, gets it read back a page at a time.
//!
//! The owner answers a subscribe or fetch through [`State::answer_owner`]: from memory at once,
//! or, when the start is only on disk, after `read_loop` read one page (`DISK_PAGE_MESSAGES`
//! messages, `DISK_PAGE_BYTES` at most). A page's answer says `more`: the subscriber asks
//! again from where it ends, until the rest comes from memory, in order with the live items
//! (the final answer is always the synchronous one). Reads go through their own DMA file
//! handles, beside the log's writes.
//!
//! A record that cannot be read back (its checksum fails, or its segment was deleted by
//! retention meanwhile) is never skipped silently: the page ends before it, and if nothing
//! could be read the answer is a discontinuity over what the page covered.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;

use crate::ids::{Seq, TopicKey};
use crate::log::decode_at;
use crate::log::dma::Segments;
use crate::message::{Message, SubscribeError};
use crate::shard::disk::{DiskRead, Fetched, Loc, ReplyTo};
use crate::shard::mesh::MeshMsg;
use crate::shard::position::{Gap, OwnerReply};
use crate::shard::state::State;
use crate::stats::ShardStats;

impl State {
    /// Sends the owner's answer to `to`: at once from memory, or once its first page is read
    /// from disk.
    pub(crate) fn answer_owner(
        &mut self,
        key: &TopicKey,
        reply: Result<Fetched, SubscribeError>,
        to: ReplyTo,
        now: Instant,
    ) {
        let (epoch, from, locs, disc) = match reply {
            Err(e) => return self.reply_to(to, Err(e), now),
            Ok(Fetched::Ready(r)) => return self.reply_to(to, Ok(r), now),
            Ok(Fetched::Disk {
                epoch,
                from,
                locs,
                disc,
            }) => (epoch, from, locs, disc),
        };
        let read = DiskRead {
            to,
            key: key.clone(),
            epoch,
            from,
            locs,
            disc,
        };
        let Some(store) = self.store.as_mut() else {
            return self.shed(read, now);
        };
        ShardStats::inc(&self.stats.storage_reads);
        if let Err(read) = store.read(read) {
            self.shed(read, now);
        }
    }

    /// Answers a read the queue had no room for from memory, with a discontinuity over what
    /// only the disk holds.
    fn shed(&mut self, r: DiskRead, now: Instant) {
        ShardStats::inc(&self.stats.storage_reads_shed);
        let reply = match self.owned.get(&r.key) {
            Some(t) if t.epoch == r.epoch => {
                let start = t.history.first_seq().unwrap_or(t.live_next());
                Ok(OwnerReply {
                    epoch: t.epoch,
                    start,
                    disc: Some(Gap {
                        last_seq: Seq(r.from.0.saturating_sub(1)),
                        new_seq: start,
                        new_epoch: t.epoch,
                    }),
                    replay: t.history.since(start).cloned().collect(),
                    more: false,
                })
            }
            _ => Err(SubscribeError::Unavailable),
        };
        self.reply_to(r.to, reply, now);
    }

    /// Delivers an owner's answer.
    pub(crate) fn reply_to(
        &mut self,
        to: ReplyTo,
        reply: Result<OwnerReply, SubscribeError>,
        now: Instant,
    ) {
        match to {
            ReplyTo::Sub(sub) => self.on_subscribe_reply(sub, reply, now),
            ReplyTo::Shard { to, sub } => self.send(to, MeshMsg::SubscribeReply { sub, reply }),
            ReplyTo::Fetch { to, token } => self.send(to, MeshMsg::FetchReply { token, reply }),
            ReplyTo::Callback(cb) => cb(reply.map(Into::into)),
        }
    }
}

/// Reads a page: the messages of `r` that could be read, in order from `r.from`.
async fn read_page(dir: &std::path::Path, r: &DiskRead) -> Result<Vec<Message>, String> {
    if r.locs.is_empty() {
        // Never asked for (the owner answers from memory then); an empty page must not
        // make a subscriber ask again for the same start.
        return Err("no record to read".to_owned());
    }
    let mut out = Vec::with_capacity(r.locs.len());
    let topic = r.key.as_str().as_bytes();
    // Messages read back are published, for history's age, when they are read.
    let now = Instant::now();
    let mut i = 0;
    while i < r.locs.len() {
        // One read per run of records in the same segment.
        let seg = r.locs[i].segment;
        let run = r.locs[i..].iter().take_while(|l| l.segment == seg).count();
        let locs: &[Loc] = &r.locs[i..i + run];
        let start = u64::from(locs[0].offset);
        let end = locs
            .iter()
            .map(|l| u64::from(l.offset) + u64::from(l.len))
            .max()
            .unwrap_or(start);
        let bytes = Segments::read_span(dir, seg, start, (end - start) as usize)
            .await
            .map_err(|e| format!("segment {seg}: {e}"))?;
        for l in locs {
            let want = Seq(r.from.0 + out.len() as u64);
            let at = (u64::from(l.offset) - start) as usize;
            match decode_at(&bytes, at) {
                Some(rec) if rec.topic == topic && rec.epoch == r.epoch.0 && rec.seq == want.0 => {
                    let publisher: Option<Arc<str>> = (!rec.publisher.is_empty())
                        .then(|| String::from_utf8_lossy(&rec.publisher).into());
                    let mut m = Message::new(r.epoch, want, Bytes::from(rec.payload), publisher);
                    m.published_at = now;
                    out.push(m);
                }
                _ => {
                    return if out.is_empty() {
                        Err(format!(
                            "segment {seg} at {}: the record of seq {} does not read back",
                            l.offset, want.0
                        ))
                    } else {
                        Ok(out)
                    }
                }
            }
        }
        i += run;
    }
    Ok(out)
}

/// Performs the shard's catch-up reads, one page at a time, until the shard stops.
pub(crate) async fn read_loop(state: Rc<RefCell<State>>, dir: PathBuf) {
    loop {
        let next = std::future::poll_fn(|cx| {
            let mut st = state.borrow_mut();
            let closing = st.closing;
            let Some(store) = st.store.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(r) = store.reads.pop_front() {
                return Poll::Ready(Some(r));
            }
            if closing {
                return Poll::Ready(None);
            }
            store.read_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(r) = next else { break };
        let page = read_page(&dir, &r).await;
        let mut st = state.borrow_mut();
        let reply = match page {
            Ok(items) => {
                ShardStats::add(&st.stats.storage_read_messages, items.len() as u64);
                OwnerReply {
                    epoch: r.epoch,
                    start: r.from,
                    disc: r.disc,
                    replay: items,
                    more: true,
                }
            }
            Err(e) => {
                // Told, never skipped: a discontinuity over the page, then on from there.
                ShardStats::inc(&st.stats.storage_read_errors);
                let past = Seq(r.from.0 + r.locs.len().max(1) as u64);
                tracing::error!(shard = st.id.0, topic = %r.key, error = %e, "a catch-up read from the log failed: subscribers get a discontinuity");
                OwnerReply {
                    epoch: r.epoch,
                    start: past,
                    disc: Some(Gap {
                        last_seq: Seq(r.from.0.saturating_sub(1)),
                        new_seq: past,
                        new_epoch: r.epoch,
                    }),
                    replay: Vec::new(),
                    more: true,
                }
            }
        };
        st.reply_to(r.to, Ok(reply), Instant::now());
    }
}
