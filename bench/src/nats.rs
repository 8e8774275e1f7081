//! NATS core over its text protocol: `SUB` connections, and publishers whose `PUB`s are
//! acknowledged in batches by `PING`/`PONG` (core NATS has no per-message acks; a `PONG`
//! means the server has processed everything the connection sent before its `PING`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::io::{ReadHalf, WriteHalf};

use crate::io::{read_more, write_all, Dialer, Stream};
use crate::replies::{Acks, Got};
use crate::scenario::BenchError;

const CHUNK: usize = 64 * 1024;
/// Largest payload accepted from the server.
const PAYLOAD_MAX: usize = 64 << 20;
const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false,\"name\":\"fanfare-bench\",\"lang\":\"rust\",\"version\":\"0.1\",\"protocol\":1}\r\nPING\r\n";

/// One server operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Info,
    Msg(Bytes),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// Parses one operation off the front of `buf`: `Ok(None)` when incomplete.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<Op>, BenchError> {
    let Some(i) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(BenchError::Connection("NATS control line too long".into()));
        }
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..i]).into_owned();
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    let op = match verb.as_str() {
        "MSG" => {
            let n: usize = line
                .split_ascii_whitespace()
                .last()
                .and_then(|w| w.parse().ok())
                .filter(|n| *n <= PAYLOAD_MAX)
                .ok_or_else(|| BenchError::Connection(format!("bad NATS MSG line: {line}")))?;
            if buf.len() < i + 2 + n + 2 {
                return Ok(None);
            }
            let payload = Bytes::copy_from_slice(&buf[i + 2..i + 2 + n]);
            buf.advance(i + 2 + n + 2);
            return Ok(Some(Op::Msg(payload)));
        }
        "INFO" => Op::Info,
        "PING" => Op::Ping,
        "PONG" => Op::Pong,
        "+OK" => Op::Ok,
        "-ERR" => Op::Err(line[4..].trim().to_owned()),
        _ => {
            return Err(BenchError::Connection(format!(
                "unexpected NATS line: {line}"
            )))
        }
    };
    buf.advance(i + 2);
    Ok(Some(op))
}

/// Connects and handshakes (`INFO`, `CONNECT`, `PING` answered by `PONG`).
async fn connect(d: &Dialer) -> Result<(Stream, BytesMut, Vec<u8>), BenchError> {
    let mut stream = d.connect().await?;
    write_all(&mut stream, CONNECT).await?;
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        while let Some(op) = parse(&mut buf)? {
            match op {
                Op::Pong => return Ok((stream, buf, chunk)),
                Op::Err(e) => return Err(BenchError::Connection(format!("NATS refused: {e}"))),
                _ => {}
            }
        }
        if read_more(&mut stream, &mut buf, &mut chunk).await? == 0 {
            return Err(BenchError::Connection(
                "NATS closed during the handshake".into(),
            ));
        }
    }
}

/// A subscribed connection.
pub(crate) struct NatsSub {
    stream: Stream,
    buf: BytesMut,
    chunk: Vec<u8>,
}

impl NatsSub {
    pub async fn subscribe(d: &Dialer, subject: &str) -> Result<NatsSub, BenchError> {
        let (mut stream, mut buf, mut chunk) = connect(d).await?;
        write_all(
            &mut stream,
            format!("SUB {subject} 1\r\nPING\r\n").as_bytes(),
        )
        .await?;
        loop {
            while let Some(op) = parse(&mut buf)? {
                match op {
                    Op::Pong => return Ok(NatsSub { stream, buf, chunk }),
                    Op::Err(e) => return Err(BenchError::Connection(format!("SUB refused: {e}"))),
                    _ => {}
                }
            }
            if read_more(&mut stream, &mut buf, &mut chunk).await? == 0 {
                return Err(BenchError::Connection(
                    "NATS closed while subscribing".into(),
                ));
            }
        }
    }

    pub async fn recv(&mut self, out: &mut Vec<Got>) -> Result<(), BenchError> {
        if read_more(&mut self.stream, &mut self.buf, &mut self.chunk).await? == 0 {
            return Err(BenchError::Connection(
                "NATS closed a subscriber connection (slow consumer?)".into(),
            ));
        }
        let mut pings = 0;
        while let Some(op) = parse(&mut self.buf)? {
            match op {
                Op::Msg(p) => out.push(Got::Item {
                    pos: None,
                    payload: p,
                }),
                Op::Ping => pings += 1,
                Op::Err(e) => return Err(BenchError::Connection(format!("NATS: {e}"))),
                _ => {}
            }
        }
        for _ in 0..pings {
            write_all(&mut self.stream, b"PONG\r\n").await?;
        }
        Ok(())
    }
}

/// A publisher: `PUB`s, with a `PING` after every batch (or when the window is full); or,
/// with JetStream, `PUB`s with a reply subject, each acknowledged by its own PubAck.
pub(crate) struct NatsPub {
    w: WriteHalf<Stream>,
    /// JetStream: the reply subject of every publish, and the intended times of the
    /// publishes awaiting their PubAck, oldest first.
    js: Option<(String, Rc<RefCell<VecDeque<u64>>>)>,
    /// Intended times of the messages sent since the last `PING`.
    pending: Vec<u64>,
    /// Batches awaiting their `PONG`, oldest first.
    batches: Rc<RefCell<VecDeque<Vec<u64>>>>,
    pong_owed: Rc<Cell<usize>>,
    batch: usize,
    out: Vec<u8>,
    _reader: glommio::Task<()>,
}

impl NatsPub {
    /// `jetstream`: the namespace whose subjects (`<ns>.>`) the stream `BENCH` stores.
    pub async fn connect(
        d: &Dialer,
        window: usize,
        jetstream: Option<&str>,
        acks: Rc<Acks>,
    ) -> Result<NatsPub, BenchError> {
        let (mut stream, mut buf, mut chunk) = connect(d).await?;
        let js = match jetstream {
            Some(ns) => {
                let inbox = stream_create(&mut stream, &mut buf, &mut chunk, ns).await?;
                Some((format!("{inbox}.a"), Rc::new(RefCell::new(VecDeque::new()))))
            }
            None => None,
        };
        let (r, w) = futures_lite::io::split(stream);
        let batches = Rc::new(RefCell::new(VecDeque::new()));
        let pong_owed = Rc::new(Cell::new(0));
        let reader = glommio::spawn_local(replies(
            r,
            buf,
            batches.clone(),
            pong_owed.clone(),
            js.as_ref().map(|(_, q)| q.clone()),
            acks,
        ));
        Ok(NatsPub {
            w,
            js,
            pending: Vec::new(),
            batches,
            pong_owed,
            batch: (window / 2).max(1),
            out: Vec::new(),
            _reader: reader,
        })
    }

    /// Appends a publish to the pending write.
    pub fn push(&mut self, subject: &str, payload: &[u8], intended: u64) {
        use std::io::Write as _;
        for _ in 0..self.pong_owed.replace(0) {
            self.out.extend_from_slice(b"PONG\r\n");
        }
        if let Some((reply, sent)) = &self.js {
            let _ = write!(self.out, "PUB {subject} {reply} {}\r\n", payload.len());
            self.out.extend_from_slice(payload);
            self.out.extend_from_slice(b"\r\n");
            sent.borrow_mut().push_back(intended);
            return;
        }
        let _ = write!(self.out, "PUB {subject} {}\r\n", payload.len());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
        self.pending.push(intended);
        if self.pending.len() >= self.batch {
            self.out.extend_from_slice(b"PING\r\n");
            self.batches
                .borrow_mut()
                .push_back(std::mem::take(&mut self.pending));
        }
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

    /// Asks for the acknowledgement of everything sent (before waiting on a full window, and
    /// at the end), and writes.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if self.js.is_none() && !self.pending.is_empty() {
            self.batches
                .borrow_mut()
                .push_back(std::mem::take(&mut self.pending));
            self.out.extend_from_slice(b"PING\r\n");
        }
        self.write().await
    }
}

/// Subscribes to a fresh reply inbox and creates the JetStream stream `BENCH` (file storage,
/// subjects `<ns>.>`; creating it again with the same settings succeeds); returns the inbox.
async fn stream_create(
    stream: &mut Stream,
    buf: &mut BytesMut,
    chunk: &mut [u8],
    ns: &str,
) -> Result<String, BenchError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let inbox = format!(
        "_INBOX.fb{}x{}x{}",
        std::process::id(),
        crate::clock::now_ns(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let cfg = format!(
        "{{\"name\":\"BENCH\",\"subjects\":[\"{ns}.>\"],\"storage\":\"file\",\"retention\":\"limits\",\"num_replicas\":1}}"
    );
    write_all(
        stream,
        format!(
            "SUB {inbox}.* 1\r\nPUB $JS.API.STREAM.CREATE.BENCH {inbox}.c {}\r\n{cfg}\r\n",
            cfg.len()
        )
        .as_bytes(),
    )
    .await?;
    loop {
        while let Some(op) = parse(buf)? {
            match op {
                Op::Msg(p) => {
                    let text = String::from_utf8_lossy(&p);
                    if text.contains("\"error\"") {
                        return Err(BenchError::Connection(format!(
                            "JetStream refused the stream (is the server run with -js?): {text}"
                        )));
                    }
                    return Ok(inbox);
                }
                Op::Err(e) => return Err(BenchError::Connection(format!("NATS: {e}"))),
                _ => {}
            }
        }
        if read_more(stream, buf, chunk).await? == 0 {
            return Err(BenchError::Connection(
                "NATS closed while creating the stream".into(),
            ));
        }
    }
}

async fn replies(
    r: ReadHalf<Stream>,
    buf: BytesMut,
    batches: Rc<RefCell<VecDeque<Vec<u64>>>>,
    pong_owed: Rc<Cell<usize>>,
    js: Option<Rc<RefCell<VecDeque<u64>>>>,
    acks: Rc<Acks>,
) {
    let on_acks = acks.clone();
    crate::replies::read_replies(r, buf, acks, "NATS", parse, |op| {
        match op {
            // A PubAck: `{"stream":..,"seq":..}`, or `{"error":..}`.
            Op::Msg(p) if js.is_some() => {
                if p.windows(7).any(|w| w == b"\"error\"") {
                    return Err(BenchError::Connection(format!(
                        "JetStream refused a publish: {}",
                        String::from_utf8_lossy(&p)
                    )));
                }
                if let Some(t) = js.as_ref().and_then(|q| q.borrow_mut().pop_front()) {
                    on_acks.ack(t);
                }
            }
            Op::Pong => {
                if let Some(b) = batches.borrow_mut().pop_front() {
                    for t in b {
                        on_acks.ack(t);
                    }
                }
            }
            Op::Ping => pong_owed.set(pong_owed.get() + 1),
            Op::Err(e) => return Err(BenchError::Connection(format!("NATS: {e}"))),
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
    fn parses_split_operations() {
        let all: &[u8] =
            b"INFO {\"server_id\":\"x\"}\r\nMSG bench.t0 1 5\r\nab\r\nc\r\nPING\r\nMSG a 1 r 0\r\n\r\n-ERR 'Slow Consumer'\r\nPONG\r\n";
        for cut in 0..all.len() {
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = Vec::new();
            while let Some(op) = parse(&mut buf).unwrap() {
                got.push(op);
            }
            buf.extend_from_slice(&all[cut..]);
            while let Some(op) = parse(&mut buf).unwrap() {
                got.push(op);
            }
            assert_eq!(
                got,
                vec![
                    Op::Info,
                    Op::Msg(Bytes::from_static(b"ab\r\nc")),
                    Op::Ping,
                    Op::Msg(Bytes::new()),
                    Op::Err("'Slow Consumer'".into()),
                    Op::Pong,
                ],
                "cut {cut}"
            );
        }
    }
}
