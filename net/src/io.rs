//! Byte-stream plumbing every protocol shares: the [`Io`] bound, reads into a connection's
//! buffer, and "this future unless shutdown comes first".

use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, ReadHalf};

use crate::metrics::{self, NetStats};

/// Bytes read per read call.
pub(crate) const READ_CHUNK_BYTES: usize = 4096;

/// A client byte stream: a plain TCP stream or TLS over one.
pub(crate) trait Io:
    futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin + 'static
{
}
impl<T: futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin + 'static> Io for T {}

/// A shutdown signal as a connection holds it (boxed once, polled many times).
pub(crate) type Stop = Pin<Box<dyn Future<Output = ()>>>;

/// Reads more bytes into `buf`; `Ok(0)` at end of stream.
pub(crate) async fn read_some<S: Io>(
    r: &mut ReadHalf<S>,
    buf: &mut BytesMut,
    chunk: &mut [u8],
    stats: &NetStats,
) -> std::io::Result<usize> {
    let n = r.read(chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    metrics::add(&stats.bytes_in, n as u64);
    Ok(n)
}

/// A future's output or `None` if `stop` fires first.
pub(crate) async fn unless<T>(stop: &mut Stop, f: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        stop.as_mut().await;
        None
    })
    .await
}

/// A future's output or `None` if `within` passes first.
pub(crate) async fn timeout<T>(
    within: std::time::Duration,
    f: impl Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(within).await;
        None
    })
    .await
}
