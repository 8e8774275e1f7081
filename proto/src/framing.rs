//! Length-prefixed framing: a 4-byte big-endian length, then that many bytes.
//!
//! Used for subscription streams over HTTP/1.1 and HTTP/2 (each frame one `ServerMessage`)
//! and for node links (each frame one `LinkMessage`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Bytes in the length prefix.
pub const PREFIX_BYTES: usize = 4;

/// A frame announced a length over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("frame of {len} bytes over the limit of {max}")]
pub struct FrameTooLarge {
    /// The announced length.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

/// Appends one frame holding `body` to `out`.
pub fn encode(out: &mut BytesMut, body: &[u8]) {
    debug_assert!(body.len() <= u32::MAX as usize);
    out.reserve(PREFIX_BYTES + body.len());
    out.put_u32(body.len() as u32);
    out.put_slice(body);
}

/// One frame holding `body`, as a shareable buffer.
pub fn encode_to_bytes(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX_BYTES + body.len());
    encode(&mut out, body);
    out.freeze()
}

/// One frame of a `len`-byte body that `write` appends to the frame's buffer (an encoder
/// writing in place instead of copying), as a shareable buffer of exactly the frame's size.
pub fn encode_to_bytes_with(len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(PREFIX_BYTES + len);
    put_frame_with(&mut out, len, write);
    Bytes::from(out)
}

/// Appends one frame of a `len`-byte body that `write` appends to `out`.
pub fn put_frame_with(out: &mut Vec<u8>, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
    debug_assert!(len <= u32::MAX as usize);
    let start = out.len();
    out.reserve(PREFIX_BYTES + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    write(out);
    debug_assert_eq!(
        out.len() - start,
        PREFIX_BYTES + len,
        "the writer wrote the length it announced"
    );
}

/// An incremental decoder with a frame size limit.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    frame_bytes_max: usize,
}

impl Decoder {
    /// A decoder refusing frames over `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: usize) -> Self {
        Self { frame_bytes_max }
    }

    /// Takes the next whole frame's body off the front of `buf`; `Ok(None)` needs more bytes.
    /// An oversized frame is refused as soon as its prefix arrives.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameTooLarge> {
        if buf.len() < PREFIX_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.frame_bytes_max {
            return Err(FrameTooLarge {
                len,
                max: self.frame_bytes_max,
            });
        }
        if buf.len() < PREFIX_BYTES + len {
            return Ok(None);
        }
        buf.advance(PREFIX_BYTES);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    quickcheck! {
        fn split_anywhere_decodes_the_same(bodies: Vec<Vec<u8>>, cut: usize) -> bool {
            let mut wire = BytesMut::new();
            for b in &bodies {
                encode(&mut wire, b);
            }
            let cut = if wire.is_empty() { 0 } else { cut % wire.len() };
            let d = Decoder::new(usize::MAX);
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            while let Ok(Some(f)) = d.decode(&mut buf) {
                out.push(f.to_vec());
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Ok(Some(f)) = d.decode(&mut buf) {
                out.push(f.to_vec());
            }
            out == bodies && buf.is_empty()
        }
    }

    #[test]
    fn oversized_prefix_is_refused_early() {
        let d = Decoder::new(10);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 11][..]);
        assert_eq!(d.decode(&mut buf), Err(FrameTooLarge { len: 11, max: 10 }));
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
    }
}
