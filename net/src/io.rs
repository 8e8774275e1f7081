//! Byte-stream plumbing every protocol shares: the [`Io`] bound, reads into a connection's
//! buffer, and "this future unless shutdown comes first".

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use futures_lite::io::AsyncRead;

use crate::metrics::{self, NetStats};

/// Bytes read per read call, into the shard's one read buffer.
pub(crate) const READ_CHUNK_BYTES: usize = 16 * 1024;

thread_local! {
    /// The shard's read buffer. A read borrows it only inside one `poll_read` call (an
    /// `AsyncRead` never keeps the buffer across `Pending`), so every connection of the shard
    /// shares it, and a connection waiting for input holds no read buffer at all.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK_BYTES].into_boxed_slice());
}

/// A client byte stream: a plain TCP stream or TLS over one.
pub(crate) trait Io:
    futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin + 'static
{
}
impl<T: futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin + 'static> Io for T {}

/// A shutdown signal as a connection holds it (boxed once, polled many times).
pub(crate) type Stop = Pin<Box<dyn Future<Output = ()>>>;

/// Reads more bytes into `buf` through the shard's read buffer; `Ok(0)` at end of stream.
///
/// Memory: while it waits, a connection holds no read buffer, and an input buffer with
/// nothing unread gives its allocation back first (payloads already split off it keep theirs:
/// they are `Bytes` sharing it). So an idle connection's input costs nothing; only a message
/// cut short keeps its bytes.
pub(crate) async fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    stats: &NetStats,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_some(cx, r, buf, stats)).await
}

/// [`read_some`] as a poll function, for sessions written as plain futures.
pub(crate) fn poll_read_some<R: AsyncRead + Unpin>(
    cx: &mut std::task::Context<'_>,
    r: &mut R,
    buf: &mut BytesMut,
    stats: &NetStats,
) -> Poll<std::io::Result<usize>> {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
    READ_BUF.with(|shared| {
        // Never borrowed across an await (only within this synchronous poll).
        let mut shared = shared.borrow_mut();
        match Pin::new(&mut *r).poll_read(cx, &mut shared) {
            Poll::Ready(Ok(n)) => {
                buf.extend_from_slice(&shared[..n]);
                metrics::add(&stats.bytes_in, n as u64);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    })
}

pin_project_lite::pin_project! {
    /// [`unless`]'s future.
    pub(crate) struct Unless<'a, F> {
        stop: &'a mut Stop,
        #[pin]
        f: F,
    }
}

impl<F: Future> Future for Unless<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.f.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match this.stop.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A future's output or `None` if `stop` fires first. A plain future, not an `async fn`: an
/// async fn would store `f` twice (as its argument and as its awaited local), and every idle
/// connection waits inside one of these.
pub(crate) fn unless<T, F: Future<Output = T>>(stop: &mut Stop, f: F) -> Unless<'_, F> {
    Unless { stop, f }
}

pin_project_lite::pin_project! {
    /// [`timeout`]'s future.
    pub(crate) struct Timeout<F> {
        #[pin]
        f: F,
        #[pin]
        timer: glommio::timer::Timer,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.f.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match this.timer.poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A future's output or `None` if `within` passes first.
pub(crate) fn timeout<T, F: Future<Output = T>>(within: std::time::Duration, f: F) -> Timeout<F> {
    Timeout {
        f,
        timer: glommio::timer::Timer::new(within),
    }
}
