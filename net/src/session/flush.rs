//! A connection's output: what its [`Conn`] has queued goes to the socket, a write's worth at a
//! time (one HTTP chunk per write for chunked bodies), driven by the task that reads the
//! connection (no writer task, no waiting buffer).
//!
//! Memory: a lone frame is written from its own (shared) buffer; several are copied into the
//! shard's one write buffer and written from there. A connection owns output bytes only while
//! its socket refuses them (the rest of a write the kernel did not take); an idle connection
//! holds none.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::AsyncWrite;

use crate::metrics;
use crate::session::conn::{Conn, Taken, WRITE_BATCH_BYTES_MAX};

thread_local! {
    /// The shard's write buffer: filled and written within one poll, never held across one.
    static WRITE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Writing what is queued.
    Open,
    /// The last bytes are queued in `rest`; then flush and close.
    Last,
    /// The last bytes are written: flushing, then closing the write side.
    Flushing,
    Closing,
    /// Over: `Conn::writer_done` was called.
    Done,
}

/// A connection's output side (see the module docs). Poll it from the connection's task.
pub(crate) struct Flusher {
    /// What a write left unsent (the socket was full), and how much of it is sent since.
    rest: Vec<u8>,
    at: usize,
    /// The size of the batch `rest` belongs to (counted once it is all sent).
    batch: usize,
    chunked: bool,
    phase: Phase,
}

/// What one turn of [`Flusher::poll_flush`] found.
enum Turn {
    Idle,
    Wrote(usize),
    Blocked,
    Failed(Option<std::io::Error>),
}

impl Flusher {
    /// A connection's output; `chunked` wraps each write in an HTTP/1.1 chunk.
    pub(crate) fn new(chunked: bool) -> Self {
        Self {
            rest: Vec::new(),
            at: 0,
            batch: 0,
            chunked,
            phase: Phase::Open,
        }
    }

    /// Writes what `conn` has queued. `Ready` once the output is over: the connection's last
    /// bytes were written and the write side closed, or a write failed (a socket that accepted
    /// nothing for the write timeout, the slow deadline, counts in `closed_slow`). Either way
    /// `conn` was told ([`Conn::writer_done`]). `Pending` with the task's waker registered for
    /// the socket or for more output.
    pub(crate) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Conn,
        w: &mut W,
    ) -> Poll<()> {
        loop {
            match self.phase {
                Phase::Done => return Poll::Ready(()),
                Phase::Flushing => {
                    if Pin::new(&mut *w).poll_flush(cx).is_pending() {
                        return Poll::Pending;
                    }
                    conn.writer_done();
                    self.phase = Phase::Closing;
                    continue;
                }
                Phase::Closing => {
                    if Pin::new(&mut *w).poll_close(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.phase = Phase::Done;
                    return Poll::Ready(());
                }
                Phase::Open | Phase::Last => {}
            }
            // What a write left unsent first.
            while self.at < self.rest.len() {
                match Pin::new(&mut *w).poll_write(cx, &self.rest[self.at..]) {
                    Poll::Ready(Ok(n)) if n > 0 => self.at += n,
                    Poll::Ready(Ok(_)) => return self.fail(conn, None),
                    Poll::Ready(Err(e)) => return self.fail(conn, Some(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !self.rest.is_empty() {
                self.rest = Vec::new();
                self.at = 0;
                if self.phase == Phase::Open {
                    conn.wrote(self.batch);
                }
            }
            if self.phase == Phase::Last {
                self.phase = Phase::Flushing;
                continue;
            }
            match self.turn(cx, conn, w) {
                Turn::Idle => return Poll::Pending,
                Turn::Blocked => return Poll::Pending,
                Turn::Wrote(n) => {
                    if self.phase == Phase::Open {
                        conn.wrote(n);
                    }
                }
                Turn::Failed(e) => return self.fail(conn, e),
            }
        }
    }

    /// Takes the next batch into the shard's buffer and writes it from there; whatever the
    /// socket does not take moves to `rest`.
    fn turn<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Conn,
        w: &mut W,
    ) -> Turn {
        let turn = WRITE_BUF.with(|b| {
            // Never borrowed across an await (only within this synchronous poll); `take_into`
            // touches only the connection's queue.
            let mut b = b.borrow_mut();
            b.clear();
            let turn = match conn.take_into(&mut b, self.chunked, cx.waker()) {
                Taken::Empty => Turn::Idle,
                // One frame (the usual fan-out wake-up): written from the shared buffer
                // itself, no copy.
                // (`take_into` hands over only a frame that holds its bytes.)
                Taken::One(f) => self.write(cx, w, f.held().unwrap_or_default()),
                Taken::Last => {
                    self.phase = Phase::Last;
                    self.write(cx, w, &b)
                }
                Taken::Frames => self.write(cx, w, &b),
            };
            if b.capacity() > 2 * WRITE_BATCH_BYTES_MAX {
                *b = Vec::new();
            }
            turn
        });
        if matches!(turn, Turn::Wrote(_)) && self.phase == Phase::Last {
            // The last bytes are out (`rest` is empty): flush and close next.
            self.phase = Phase::Flushing;
        }
        turn
    }

    /// Writes `bytes`; what the socket does not take moves to `rest`.
    fn write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
        bytes: &[u8],
    ) -> Turn {
        let mut at = 0;
        while at < bytes.len() {
            match Pin::new(&mut *w).poll_write(cx, &bytes[at..]) {
                Poll::Ready(Ok(n)) if n > 0 => at += n,
                Poll::Ready(Ok(_)) => return Turn::Failed(None),
                Poll::Ready(Err(e)) => return Turn::Failed(Some(e)),
                Poll::Pending => {
                    self.rest = bytes[at..].to_vec();
                    self.at = 0;
                    self.batch = bytes.len();
                    return Turn::Blocked;
                }
            }
        }
        Turn::Wrote(bytes.len())
    }

    fn fail(&mut self, conn: &Conn, e: Option<std::io::Error>) -> Poll<()> {
        if e.as_ref()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            metrics::inc(&conn.ctx.stats.closed_slow);
            tracing::info!(
                "closing a connection whose socket accepted nothing for the slow deadline"
            );
        }
        self.rest = Vec::new();
        self.phase = Phase::Done;
        conn.writer_done();
        Poll::Ready(())
    }
}

/// Runs a connection's output until it is over (for sessions written as `async fn`s).
pub(crate) async fn drive<W: AsyncWrite + Unpin>(conn: &Conn, mut w: W, chunked: bool) {
    let mut out = Flusher::new(chunked);
    std::future::poll_fn(|cx| out.poll_flush(cx, conn, &mut w)).await;
}
