//! What both ends of a node link share: the outgoing frame queue and its writer, the frame
//! reader, and the hello exchange.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fanfare_core::Encoded;
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::{framing, LinkMsg};
use flatbuffers::FlatBufferBuilder;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use super::config::LINK_VERSION;
use crate::metrics::{self, NetStats};

/// Most bytes one write carries.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Time allowed for the hello exchange.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A queued frame: shared by every link of the shard (a live item) or this link's own.
pub(crate) enum Frame {
    Shared(Encoded),
    Own(Bytes),
}

impl Frame {
    fn bytes(&self) -> &[u8] {
        match self {
            Frame::Shared(b) => b,
            Frame::Own(b) => b,
        }
    }
}

/// A link's outgoing frames. Bounded by the owner of the queue (see `bytes`).
#[derive(Default)]
pub(crate) struct LinkQueue {
    frames: RefCell<VecDeque<Frame>>,
    bytes: Cell<usize>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl LinkQueue {
    /// Queues a frame (ignored once closed).
    pub fn push(&self, f: Frame) {
        if self.closed.get() {
            return;
        }
        self.bytes.set(self.bytes.get() + f.bytes().len());
        self.frames.borrow_mut().push_back(f);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Ends the writer; queued frames are dropped.
    pub fn close(&self) {
        self.closed.set(true);
        self.frames.borrow_mut().clear();
        self.bytes.set(0);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Waits for frames and moves up to a write's worth into `buf`; `false` once closed.
    async fn next_batch(&self, buf: &mut Vec<u8>) -> bool {
        std::future::poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(false);
            }
            let mut frames = self.frames.borrow_mut();
            if frames.is_empty() {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            while let Some(f) = frames.front() {
                if !buf.is_empty() && buf.len() + f.bytes().len() > WRITE_BATCH_BYTES_MAX {
                    break;
                }
                buf.extend_from_slice(f.bytes());
                self.bytes
                    .set(self.bytes.get().saturating_sub(f.bytes().len()));
                frames.pop_front();
            }
            Poll::Ready(true)
        })
        .await
    }
}

/// Writes `q` to `w` until the queue closes or a write fails; `after_write` runs after each
/// write (room for lagging subscriptions).
pub(crate) async fn write_loop<W: futures_lite::io::AsyncWrite + Unpin>(
    q: Rc<LinkQueue>,
    mut w: W,
    stats: Arc<NetStats>,
    after_write: impl Fn(),
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        if !q.next_batch(&mut buf).await {
            break;
        }
        if w.write_all(&buf).await.is_err() {
            break;
        }
        metrics::inc(&stats.writes);
        metrics::add(&stats.bytes_out, buf.len() as u64);
        after_write();
        if buf.capacity() > 4 * WRITE_BATCH_BYTES_MAX {
            buf = Vec::with_capacity(64 * 1024);
        }
    }
    q.close();
    let _ = w.close().await;
}

/// How often a repeated link refusal is logged (every one is counted in a metric).
pub(crate) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets a repeated log line through at most once per period (a misconfigured peer retries
/// every second; the metrics count every attempt).
#[derive(Default)]
pub(crate) struct LogGate(Cell<Option<std::time::Instant>>);

impl LogGate {
    /// Whether to log now.
    pub fn open(&self, every: Duration) -> bool {
        let now = std::time::Instant::now();
        match self.0.get() {
            Some(last) if now.saturating_duration_since(last) < every => false,
            _ => {
                self.0.set(Some(now));
                true
            }
        }
    }
}

/// Why a link ended.
#[derive(Debug)]
pub(crate) enum LinkEnd {
    Io(std::io::Error),
    Closed,
    Protocol(String),
    /// TLS handshake failed or the peer's certificate does not name it.
    Auth(String),
}

/// `fut`, or a `what timed out` error after `d`.
pub(crate) async fn within<T>(
    d: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, LinkEnd>>,
) -> Result<T, LinkEnd> {
    futures_lite::future::or(fut, async {
        glommio::timer::sleep(d).await;
        Err(LinkEnd::Protocol(format!("{what} timed out")))
    })
    .await
}

impl std::fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkEnd::Io(e) => write!(f, "{e}"),
            LinkEnd::Closed => f.write_str("closed by peer"),
            LinkEnd::Protocol(s) => write!(f, "protocol error: {s}"),
            LinkEnd::Auth(s) => write!(f, "authentication failed: {s}"),
        }
    }
}

/// Reads link frames one at a time.
pub(crate) struct FrameReader<R> {
    r: R,
    buf: BytesMut,
    chunk: Vec<u8>,
    decoder: framing::Decoder,
    limits: DecodeLimits,
    stats: Arc<NetStats>,
}

impl<R: futures_lite::io::AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R, frame_bytes_max: usize, stats: Arc<NetStats>) -> Self {
        FrameReader {
            r,
            buf: BytesMut::with_capacity(64 * 1024),
            chunk: vec![0u8; 64 * 1024],
            decoder: framing::Decoder::new(frame_bytes_max),
            limits: DecodeLimits {
                payload_bytes_max: frame_bytes_max,
                ..DecodeLimits::default()
            },
            stats,
        }
    }

    /// The next message.
    pub async fn next(&mut self) -> Result<LinkMsg, LinkEnd> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(body)) => {
                    metrics::inc(&self.stats.cluster_link_frames_in);
                    return LinkMsg::decode(&body, &self.limits)
                        .map_err(|e| LinkEnd::Protocol(e.to_string()));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(LinkEnd::Protocol(format!(
                        "frame of {} bytes over the limit of {}",
                        e.len, e.max
                    )))
                }
            }
            let n = self.r.read(&mut self.chunk).await.map_err(LinkEnd::Io)?;
            if n == 0 {
                return Err(LinkEnd::Closed);
            }
            metrics::add(&self.stats.bytes_in, n as u64);
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// Encodes link messages (one builder per shard, never held across an await).
pub(crate) struct Encoder {
    fbb: RefCell<FlatBufferBuilder<'static>>,
    stats: Arc<NetStats>,
}

impl Encoder {
    pub fn new(stats: Arc<NetStats>) -> Self {
        Encoder {
            fbb: RefCell::new(FlatBufferBuilder::with_capacity(4096)),
            stats,
        }
    }

    /// `msg` as one length-prefixed frame.
    pub fn frame(&self, msg: &LinkMsg) -> Bytes {
        let mut fbb = self.fbb.borrow_mut();
        msg.encode_into(&mut fbb);
        metrics::inc(&self.stats.cluster_link_frames_out);
        framing::encode_to_bytes(fbb.finished_data())
    }
}

/// Sends our hello and reads the peer's; returns the peer's node id. The reader keeps
/// whatever arrived after the hello.
pub(crate) async fn hello<R, W>(
    reader: &mut FrameReader<R>,
    w: &mut W,
    enc: &Encoder,
    node_id: &str,
    shard: u16,
) -> Result<String, LinkEnd>
where
    R: futures_lite::io::AsyncRead + Unpin,
    W: futures_lite::io::AsyncWrite + Unpin,
{
    let ours = enc.frame(&LinkMsg::Hello {
        version: LINK_VERSION,
        node_id: node_id.to_owned(),
        shard,
    });
    w.write_all(&ours).await.map_err(LinkEnd::Io)?;
    match reader.next().await? {
        LinkMsg::Hello {
            version, node_id, ..
        } if version == LINK_VERSION => Ok(node_id),
        LinkMsg::Hello { version, .. } => Err(LinkEnd::Protocol(format!(
            "link version {version}, this node speaks {LINK_VERSION}"
        ))),
        _ => Err(LinkEnd::Protocol("expected a hello".into())),
    }
}
