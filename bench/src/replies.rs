//! What connections hand back: a subscriber's items ([`Got`]), a publisher's
//! acknowledgement window ([`Acks`]), and the reply reader every publisher shares.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use crate::io;
use crate::report::{Progress, Tally};
use crate::scenario::BenchError;

/// What a subscriber connection yields.
pub(crate) enum Got {
    /// A message; `pos` is the broker's `(epoch, seq)` when it has one.
    Item {
        pos: Option<(u64, u64)>,
        payload: Bytes,
    },
    /// The broker says messages were lost; delivery continues at `(epoch, next)`.
    Discontinuity { epoch: u64, next: u64 },
}

/// A publisher's acknowledgements: its window, and counting.
pub(crate) struct Acks {
    pub(crate) in_flight: Cell<usize>,
    pub(crate) waker: RefCell<Option<Waker>>,
    pub(crate) error: RefCell<Option<BenchError>>,
    pub(crate) tally: Rc<RefCell<Tally>>,
    pub(crate) progress: Arc<Progress>,
    /// The measured window `[from, to)` of intended send times.
    pub(crate) window: Cell<(u64, u64)>,
}

impl Acks {
    /// The broker acknowledged the publish intended at `intended`.
    pub(crate) fn ack(&self, intended: u64) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        let (from, to) = self.window.get();
        if intended >= from && intended < to {
            let mut t = self.tally.borrow_mut();
            t.published += 1;
            let took = crate::clock::now_ns().saturating_sub(intended).max(1);
            let _ = t
                .ack_latency
                .record(took.min(crate::report::LATENCY_NS_MAX));
            drop(t);
            self.progress.published.fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }

    /// The connection failed.
    pub(crate) fn fail(&self, e: BenchError) {
        self.error.borrow_mut().get_or_insert(e);
        self.wake();
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub(crate) fn take_error(&self) -> Result<(), BenchError> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Resolves once fewer than `n` are in flight (or the connection failed).
    pub(crate) async fn below(&self, n: usize) {
        std::future::poll_fn(|cx| {
            if self.in_flight.get() < n || self.error.borrow().is_some() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// Reads a publisher connection's replies until it fails: `parse` takes one reply off the
/// buffer, `on` handles it (acknowledgements, refusals); the first error fails the publisher.
pub(crate) async fn read_replies<T>(
    mut r: futures_lite::io::ReadHalf<io::Stream>,
    mut buf: bytes::BytesMut,
    acks: Rc<Acks>,
    who: &str,
    mut parse: impl FnMut(&mut bytes::BytesMut) -> Result<Option<T>, BenchError>,
    mut on: impl FnMut(T) -> Result<(), BenchError>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let res: Result<(), BenchError> = async {
        loop {
            while let Some(v) = parse(&mut buf)? {
                on(v)?;
            }
            if io::read_more(&mut r, &mut buf, &mut chunk).await? == 0 {
                return Err(BenchError::Connection(format!(
                    "{who} closed a publisher connection"
                )));
            }
        }
    }
    .await;
    if let Err(e) = res {
        acks.fail(e);
    }
}
