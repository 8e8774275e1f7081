//! Redis pub/sub over RESP2: `SUBSCRIBE` connections, and publishers pipelining `PUBLISH`
//! (each integer reply acknowledges the oldest publish in flight).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::io::{ReadHalf, WriteHalf};

use crate::io::{read_more, write_all, Dialer, Stream};
use crate::replies::{Acks, Got};
use crate::scenario::BenchError;

const CHUNK: usize = 64 * 1024;
/// Largest bulk string accepted from the server.
const BULK_MAX: usize = 512 << 20;

/// One RESP value (the parts the generator needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Bytes>),
    Array(Vec<Resp>),
}

/// Parses one value off the front of `buf`: `Ok(None)` when incomplete.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<Resp>, BenchError> {
    let mut pos = 0;
    match parse_at(buf, &mut pos)? {
        Some(v) => {
            buf.advance(pos);
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

fn line(buf: &[u8], pos: &mut usize) -> Option<String> {
    let rest = &buf[*pos..];
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    let s = String::from_utf8_lossy(&rest[..i]).into_owned();
    *pos += i + 2;
    Some(s)
}

fn parse_at(buf: &[u8], pos: &mut usize) -> Result<Option<Resp>, BenchError> {
    let bad = |m: &str| BenchError::Connection(format!("bad RESP from Redis: {m}"));
    if *pos >= buf.len() {
        return Ok(None);
    }
    let kind = buf[*pos];
    let start = *pos;
    *pos += 1;
    let Some(l) = line(buf, pos) else {
        *pos = start;
        return Ok(None);
    };
    let int = |s: &str| s.parse::<i64>().map_err(|_| bad(s));
    Ok(Some(match kind {
        b'+' => Resp::Simple(l),
        b'-' => Resp::Error(l),
        b':' => Resp::Int(int(&l)?),
        b'$' => {
            let n = int(&l)?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let n = n as usize;
                if n > BULK_MAX {
                    return Err(bad("bulk string too large"));
                }
                if buf.len() < *pos + n + 2 {
                    *pos = start;
                    return Ok(None);
                }
                let b = Bytes::copy_from_slice(&buf[*pos..*pos + n]);
                *pos += n + 2;
                Resp::Bulk(Some(b))
            }
        }
        b'*' => {
            let n = int(&l)?;
            let mut items = Vec::with_capacity(n.clamp(0, 16) as usize);
            for _ in 0..n.max(0) {
                match parse_at(buf, pos)? {
                    Some(v) => items.push(v),
                    None => {
                        *pos = start;
                        return Ok(None);
                    }
                }
            }
            Resp::Array(items)
        }
        other => return Err(bad(&format!("type byte {other:#x}"))),
    }))
}

/// Appends a command as a RESP array of bulk strings.
pub(crate) fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    use std::io::Write as _;
    let _ = write!(out, "*{}\r\n", parts.len());
    for p in parts {
        let _ = write!(out, "${}\r\n", p.len());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// A subscribed connection.
pub(crate) struct RedisSub {
    stream: Stream,
    buf: BytesMut,
    chunk: Vec<u8>,
}

impl RedisSub {
    pub async fn subscribe(d: &Dialer, channel: &str) -> Result<RedisSub, BenchError> {
        let mut stream = d.connect().await?;
        let mut out = Vec::new();
        command(&mut out, &[b"SUBSCRIBE", channel.as_bytes()]);
        write_all(&mut stream, &out).await?;
        let mut s = RedisSub {
            stream,
            buf: BytesMut::new(),
            chunk: vec![0u8; CHUNK],
        };
        loop {
            while let Some(v) = parse(&mut s.buf)? {
                match v {
                    Resp::Array(a) if matches!(a.first(), Some(Resp::Bulk(Some(k))) if &k[..] == b"subscribe") => {
                        return Ok(s)
                    }
                    Resp::Error(e) => {
                        return Err(BenchError::Connection(format!("SUBSCRIBE refused: {e}")))
                    }
                    _ => {}
                }
            }
            if read_more(&mut s.stream, &mut s.buf, &mut s.chunk).await? == 0 {
                return Err(BenchError::Connection(
                    "Redis closed while subscribing".into(),
                ));
            }
        }
    }

    pub async fn recv(&mut self, out: &mut Vec<Got>) -> Result<(), BenchError> {
        if read_more(&mut self.stream, &mut self.buf, &mut self.chunk).await? == 0 {
            return Err(BenchError::Connection(
                "Redis closed a subscriber connection (output buffer limit?)".into(),
            ));
        }
        while let Some(v) = parse(&mut self.buf)? {
            if let Resp::Array(mut a) = v {
                if a.len() == 3 && matches!(&a[0], Resp::Bulk(Some(k)) if &k[..] == b"message") {
                    if let Some(Resp::Bulk(Some(p))) = a.pop() {
                        out.push(Got::Item {
                            pos: None,
                            payload: p,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// A publisher pipelining `PUBLISH`.
pub(crate) struct RedisPub {
    /// `XADD` to a stream instead of `PUBLISH` (the scenario's `durable`).
    durable: bool,
    w: WriteHalf<Stream>,
    sent: Rc<RefCell<VecDeque<u64>>>,
    out: Vec<u8>,
    _reader: glommio::Task<()>,
}

impl RedisPub {
    pub async fn connect(
        d: &Dialer,
        durable: bool,
        acks: Rc<Acks>,
    ) -> Result<RedisPub, BenchError> {
        let stream = d.connect().await?;
        let (r, w) = futures_lite::io::split(stream);
        let sent = Rc::new(RefCell::new(VecDeque::new()));
        let reader = glommio::spawn_local(replies(r, sent.clone(), acks));
        Ok(RedisPub {
            durable,
            w,
            sent,
            out: Vec::new(),
            _reader: reader,
        })
    }

    /// Appends a publish to the pending write.
    pub fn push(&mut self, channel: &str, payload: &[u8], intended: u64) {
        if self.durable {
            // The stream grows without a cap: a run's messages are its retention.
            command(
                &mut self.out,
                &[b"XADD", channel.as_bytes(), b"*", b"p", payload],
            );
        } else {
            command(&mut self.out, &[b"PUBLISH", channel.as_bytes(), payload]);
        }
        self.sent.borrow_mut().push_back(intended);
    }

    /// Writes what was pushed.
    pub async fn write(&mut self) -> Result<(), BenchError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = write_all(&mut self.w, &self.out).await;
        self.out.clear();
        r
    }
}

async fn replies(r: ReadHalf<Stream>, sent: Rc<RefCell<VecDeque<u64>>>, acks: Rc<Acks>) {
    let on_acks = acks.clone();
    crate::replies::read_replies(r, BytesMut::new(), acks, "Redis", parse, |v| {
        match v {
            // PUBLISH answers the receiver count, XADD the new entry's id.
            Resp::Int(_) | Resp::Bulk(Some(_)) => {
                if let Some(t) = sent.borrow_mut().pop_front() {
                    on_acks.ack(t);
                }
            }
            Resp::Error(e) => return Err(BenchError::Connection(format!("publish refused: {e}"))),
            _ => {}
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_parses_split_input_and_push_messages() {
        let mut all = Vec::new();
        command(&mut all, &[b"message", b"bench.t0", b"\x00\x01payload\r\n"]);
        all.extend_from_slice(b":3\r\n-ERR x\r\n$-1\r\n+OK\r\n");
        // Every split point gives the same values.
        for cut in 0..all.len() {
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = Vec::new();
            while let Some(v) = parse(&mut buf).unwrap() {
                got.push(v);
            }
            buf.extend_from_slice(&all[cut..]);
            while let Some(v) = parse(&mut buf).unwrap() {
                got.push(v);
            }
            assert_eq!(got.len(), 5, "cut {cut}");
            assert_eq!(
                got[0],
                Resp::Array(vec![
                    Resp::Bulk(Some(Bytes::from_static(b"message"))),
                    Resp::Bulk(Some(Bytes::from_static(b"bench.t0"))),
                    Resp::Bulk(Some(Bytes::from_static(b"\x00\x01payload\r\n"))),
                ])
            );
            assert_eq!(got[1], Resp::Int(3));
            assert_eq!(got[2], Resp::Error("ERR x".into()));
            assert_eq!(got[3], Resp::Bulk(None));
            assert_eq!(got[4], Resp::Simple("OK".into()));
        }
        assert!(parse(&mut BytesMut::from(&b"?x\r\n"[..])).is_err());
    }
}
