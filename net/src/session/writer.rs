//! The writer: drains a connection's queue into its socket, everything queued in one write
//! (wrapped in one HTTP chunk for chunked bodies).

use std::rc::Rc;

use futures_lite::io::AsyncWriteExt;

use crate::metrics;
use crate::session::conn::{Conn, Frame, Next, WRITE_BATCH_BYTES_MAX};

/// Drains `conn`'s queue into the socket until the connection ends. Everything queued
/// meanwhile goes out in one write (wrapped in one HTTP chunk for chunked bodies).
pub(crate) async fn writer<W: futures_lite::io::AsyncWrite + Unpin>(
    conn: Rc<Conn>,
    mut w: W,
    chunked: bool,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        buf.clear();
        match conn.next_batch().await {
            Next::Frames(batch) => {
                if chunked {
                    chunk(&mut buf, &batch);
                } else {
                    for f in &batch {
                        buf.extend_from_slice(f);
                    }
                }
            }
            Next::Last(last) => {
                if chunked {
                    if !last.is_empty() {
                        chunk(&mut buf, &[Frame::Own(last)]);
                    }
                    buf.extend_from_slice(b"0\r\n\r\n");
                } else {
                    buf.extend_from_slice(&last);
                }
                let _ = w.write_all(&buf).await;
                let _ = w.flush().await;
                break;
            }
        }
        if let Err(e) = w.write_all(&buf).await {
            if e.kind() == std::io::ErrorKind::TimedOut {
                metrics::inc(&conn.ctx.stats.closed_slow);
                tracing::info!(
                    "closing a connection whose socket accepted nothing for the slow deadline"
                );
            }
            break;
        }
        conn.wrote(buf.len());
        if buf.capacity() > 2 * WRITE_BATCH_BYTES_MAX {
            buf = Vec::new();
        }
    }
    conn.writer_done();
    let _ = w.close().await;
}

fn chunk(buf: &mut Vec<u8>, frames: &[Frame]) {
    use std::io::Write as _;
    let n: usize = frames.iter().map(|f| f.len()).sum();
    let _ = write!(buf, "{n:x}\r\n");
    for f in frames {
        buf.extend_from_slice(f);
    }
    buf.extend_from_slice(b"\r\n");
}
