//! Fanfare clients of the generator: WebSocket (publish, subscribe), Server-Sent Events
//! (subscribe) and HTTP/2 (publish with POST, subscribe to length-prefixed frames).

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::ws::{self, Message, Opcode, Role};
use fanfare_proto::{framing, ClientMsg, Name, ServerMsg, Start};
use futures_lite::io::{ReadHalf, WriteHalf};

use crate::io::{read_more, write_all, Dialer, Stream};
use crate::replies::{Acks, Got};
use crate::scenario::BenchError;

const CHUNK: usize = 64 * 1024;

fn conn_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Connection(e.to_string())
}

fn with_token(path: &str, token: Option<&str>) -> String {
    match token {
        None => path.to_owned(),
        Some(t) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}token={t}")
        }
    }
}

/// Items, discontinuities and refusals in a server message.
fn server_msg(b: &Bytes, out: &mut Vec<Got>) -> Result<(), BenchError> {
    match ServerMsg::decode(b, &DecodeLimits::default()) {
        Ok(ServerMsg::Item(i)) => out.push(Got::Item {
            pos: Some((i.epoch, i.seq)),
            payload: i.payload,
        }),
        Ok(ServerMsg::ItemBatch(v)) => out.extend(v.into_iter().map(|i| Got::Item {
            pos: Some((i.epoch, i.seq)),
            payload: i.payload,
        })),
        Ok(ServerMsg::Discontinuity {
            new_seq, new_epoch, ..
        }) => out.push(Got::Discontinuity {
            epoch: new_epoch,
            next: new_seq,
        }),
        Ok(ServerMsg::SubscriptionClosed { text, .. }) => {
            return Err(BenchError::Connection(format!(
                "subscription closed by the broker: {text}"
            )))
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------- WebSocket

/// A WebSocket connection after the upgrade.
pub(crate) struct Ws {
    stream: Stream,
    rbuf: BytesMut,
    decoder: ws::Decoder,
    chunk: Vec<u8>,
}

impl Ws {
    pub async fn connect(d: &Dialer, path: &str, token: Option<&str>) -> Result<Ws, BenchError> {
        let mut stream = d.connect().await?;
        let nonce: [u8; 16] =
            std::array::from_fn(|i| (crate::clock::now_ns() >> (i % 8)) as u8 ^ i as u8);
        let path = with_token(path, token);
        let (req, key) = ws::client_request(&d.host, &path, nonce, &[]);
        write_all(&mut stream, req.as_bytes()).await?;
        let mut rbuf = BytesMut::new();
        let mut chunk = vec![0u8; CHUNK];
        loop {
            match ws::parse_client_response(&rbuf, &key) {
                Ok(Some(n)) => {
                    rbuf.advance(n);
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(BenchError::Connection(format!("upgrade refused: {e}"))),
            }
            if read_more(&mut stream, &mut rbuf, &mut chunk).await? == 0 {
                return Err(BenchError::Connection("closed during the upgrade".into()));
            }
        }
        let limits = ws::Limits {
            frame_bytes_max: 64 << 20,
            message_bytes_max: 64 << 20,
        };
        Ok(Ws {
            stream,
            rbuf,
            decoder: ws::Decoder::new(Role::Client, limits),
            chunk,
        })
    }

    async fn send(&mut self, m: &ClientMsg) -> Result<(), BenchError> {
        let mut out = BytesMut::new();
        ws::encode_frame(
            &mut out,
            Opcode::Binary,
            true,
            &m.encode_to_vec(),
            Some([7, 7, 7, 7]),
        );
        write_all(&mut self.stream, &out).await
    }

    /// Subscribes and waits for `Subscribed`.
    pub async fn subscribe(mut self, ns: &str, topic: &str) -> Result<Ws, BenchError> {
        self.send(&ClientMsg::Subscribe {
            request_id: 1,
            namespace: Name::try_from(ns).map_err(|e| BenchError::Scenario(e.to_string()))?,
            topic: Name::try_from(topic).map_err(|e| BenchError::Scenario(e.to_string()))?,
            from: Start::Latest,
            presence: None,
        })
        .await?;
        loop {
            while let Some(m) = self.decoder.decode(&mut self.rbuf).map_err(conn_err)? {
                if let Message::Binary(b) = m {
                    match ServerMsg::decode(&b, &DecodeLimits::default()) {
                        Ok(ServerMsg::Subscribed { .. }) => return Ok(self),
                        Ok(ServerMsg::Error { text, .. }) => {
                            return Err(BenchError::Connection(format!(
                                "subscribe refused: {text}"
                            )))
                        }
                        _ => {}
                    }
                }
            }
            if read_more(&mut self.stream, &mut self.rbuf, &mut self.chunk).await? == 0 {
                return Err(BenchError::Connection("closed while subscribing".into()));
            }
        }
    }

    /// Reads once and decodes everything complete.
    pub async fn recv(&mut self, out: &mut Vec<Got>) -> Result<(), BenchError> {
        if read_more(&mut self.stream, &mut self.rbuf, &mut self.chunk).await? == 0 {
            return Err(BenchError::Connection(
                "broker closed a subscriber connection".into(),
            ));
        }
        while let Some(m) = self.decoder.decode(&mut self.rbuf).map_err(conn_err)? {
            if let Message::Binary(b) = m {
                server_msg(&b, out)?;
            }
        }
        Ok(())
    }

    /// Splits into a publisher: the write half, and a reader task turning acks into `acks`.
    /// With `keyed`, every publish carries a unique idempotency key.
    pub fn into_publisher(self, acks: Rc<Acks>, keyed: bool) -> WsPub {
        let Ws {
            stream,
            rbuf,
            decoder,
            chunk: _,
        } = self;
        let (r, w) = futures_lite::io::split(stream);
        let reader = glommio::spawn_local(ws_acks(r, rbuf, decoder, acks));
        WsPub {
            w,
            fbb: flatbuffers::FlatBufferBuilder::with_capacity(1024),
            out: BytesMut::new(),
            mask: 0x1234_5678,
            keys: keyed.then(|| (crate::clock::now_ns(), 0)),
            _reader: reader,
        }
    }
}

async fn ws_acks(r: ReadHalf<Stream>, rbuf: BytesMut, mut decoder: ws::Decoder, acks: Rc<Acks>) {
    let on_acks = acks.clone();
    crate::replies::read_replies(
        r,
        rbuf,
        acks,
        "the broker",
        |buf| decoder.decode(buf).map_err(conn_err),
        |m| {
            if let Message::Binary(b) = m {
                match ServerMsg::decode(&b, &DecodeLimits::default()) {
                    Ok(ServerMsg::PublishAck { request_id, .. }) => on_acks.ack(request_id),
                    Ok(ServerMsg::Error { text, .. }) => {
                        return Err(BenchError::Connection(format!("publish refused: {text}")))
                    }
                    _ => {}
                }
            }
            Ok(())
        },
    )
    .await
}

/// A WebSocket publisher.
pub(crate) struct WsPub {
    w: WriteHalf<Stream>,
    fbb: flatbuffers::FlatBufferBuilder<'static>,
    out: BytesMut,
    mask: u32,
    /// With idempotency keys: this publisher's id and how many keys it used.
    keys: Option<(u64, u64)>,
    _reader: glommio::Task<()>,
}

impl WsPub {
    /// Appends a publish frame to the pending write.
    pub fn push(&mut self, ns: &str, topic: &str, payload: &[u8], intended: u64) {
        let idempotency_key = self.keys.as_mut().map(|(id, n)| {
            *n += 1;
            format!("{id:x}-{n:x}")
        });
        let msg = ClientMsg::Publish {
            // The request id carries the intended time, so acks are counted by window.
            request_id: intended,
            // The scenario's namespace was checked before the run (`check`), and topic names
            // are generated (`t<N>`).
            namespace: Name::new_unchecked(ns),
            topic: Name::new_unchecked(topic),
            payload: Bytes::copy_from_slice(payload),
            idempotency_key,
        };
        msg.encode_into(&mut self.fbb);
        self.mask = self
            .mask
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        ws::encode_frame(
            &mut self.out,
            Opcode::Binary,
            true,
            self.fbb.finished_data(),
            Some(self.mask.to_be_bytes()),
        );
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

// ---------------------------------------------------------------- Server-Sent Events

/// An SSE subscription over HTTP/1.1 (chunked body).
pub(crate) struct Sse {
    stream: Stream,
    raw: BytesMut,
    body: BytesMut,
    chunk: Vec<u8>,
    /// Bytes left in the current HTTP chunk (`None`: expecting a chunk-size line).
    left: Option<usize>,
}

impl Sse {
    pub async fn subscribe(
        d: &Dialer,
        ns: &str,
        topic: &str,
        token: Option<&str>,
    ) -> Result<Sse, BenchError> {
        let mut stream = d.connect().await?;
        let path = with_token(&format!("/v1/topics/{ns}/{topic}"), token);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            d.host
        );
        write_all(&mut stream, req.as_bytes()).await?;
        let mut raw = BytesMut::new();
        let mut chunk = vec![0u8; CHUNK];
        let head_end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i + 4;
            }
            if raw.len() > 16 * 1024 || read_more(&mut stream, &mut raw, &mut chunk).await? == 0 {
                return Err(BenchError::Connection("no SSE response head".into()));
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            let status = head.lines().next().unwrap_or("").to_owned();
            return Err(BenchError::Connection(format!(
                "subscribe refused: {status}"
            )));
        }
        raw.advance(head_end);
        Ok(Sse {
            stream,
            raw,
            body: BytesMut::new(),
            chunk,
            left: None,
        })
    }

    /// Moves chunked-encoding payload from `raw` to `body`.
    fn dechunk(&mut self) -> Result<(), BenchError> {
        loop {
            match self.left {
                None => {
                    let Some(i) = find(&self.raw, b"\r\n") else {
                        return Ok(());
                    };
                    let line = std::str::from_utf8(&self.raw[..i]).map_err(conn_err)?;
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .map_err(|_| BenchError::Connection("bad chunk size".into()))?;
                    if size == 0 {
                        return Err(BenchError::Connection("SSE stream ended".into()));
                    }
                    self.raw.advance(i + 2);
                    self.left = Some(size);
                }
                Some(0) => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    self.raw.advance(2); // CRLF after the chunk
                    self.left = None;
                }
                Some(n) => {
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let take = n.min(self.raw.len());
                    self.body.extend_from_slice(&self.raw[..take]);
                    self.raw.advance(take);
                    self.left = Some(n - take);
                }
            }
        }
    }

    pub async fn recv(&mut self, out: &mut Vec<Got>) -> Result<(), BenchError> {
        if read_more(&mut self.stream, &mut self.raw, &mut self.chunk).await? == 0 {
            return Err(BenchError::Connection("broker closed an SSE stream".into()));
        }
        self.dechunk()?;
        while let Some(i) = find(&self.body, b"\n\n") {
            let block = self.body.split_to(i + 2);
            let text = std::str::from_utf8(&block).map_err(conn_err)?;
            let (events, _) = fanfare_proto::sse::parse_events(text);
            for ev in events {
                let pos = ev
                    .id
                    .as_deref()
                    .and_then(|id| fanfare_proto::sse::parse_event_id(id).ok());
                match ev.event.as_str() {
                    "item" => out.push(Got::Item {
                        pos,
                        payload: Bytes::from(ev.data.into_bytes()),
                    }),
                    "item-b64" => {
                        use base64::Engine as _;
                        let p = base64::engine::general_purpose::STANDARD
                            .decode(ev.data.as_bytes())
                            .map_err(conn_err)?;
                        out.push(Got::Item {
                            pos,
                            payload: Bytes::from(p),
                        });
                    }
                    // The id is the new position minus one.
                    "discontinuity" => {
                        if let Some((epoch, last)) = pos {
                            out.push(Got::Discontinuity {
                                epoch,
                                next: last + 1,
                            });
                        }
                    }
                    "error" => {
                        return Err(BenchError::Connection(format!(
                            "stream ended by the broker: {}",
                            ev.data
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------- HTTP/2

type H2Send = h2::client::SendRequest<Bytes>;

/// Opens an HTTP/2 connection (prior knowledge on plaintext, ALPN h2 on TLS); its driver
/// runs as a task that ends with the returned handle.
async fn h2_connect(d: &Dialer) -> Result<(H2Send, glommio::task::JoinHandle<()>), BenchError> {
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let stream = d.connect().await?;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(stream.compat())
        .await
        .map_err(|e| BenchError::Connection(format!("HTTP/2 handshake: {e}")))?;
    let driver = glommio::spawn_local(async move {
        let _ = conn.await;
    })
    .detach();
    Ok((send, driver))
}

fn h2_request(
    d: &Dialer,
    method: http::Method,
    path: &str,
    token: Option<&str>,
) -> Result<http::Request<()>, BenchError> {
    let scheme = if d.tls.is_some() { "https" } else { "http" };
    let mut r = http::Request::builder()
        .method(method)
        .uri(format!("{scheme}://{}{path}", d.host));
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(()).map_err(conn_err)
}

/// A subscription as an HTTP/2 stream of length-prefixed frames.
pub(crate) struct H2Sub {
    body: h2::RecvStream,
    buf: BytesMut,
    frames: framing::Decoder,
    _driver: glommio::task::JoinHandle<()>,
}

impl H2Sub {
    pub async fn subscribe(
        d: &Dialer,
        ns: &str,
        topic: &str,
        token: Option<&str>,
    ) -> Result<H2Sub, BenchError> {
        let (send, driver) = h2_connect(d).await?;
        let req = h2_request(
            d,
            http::Method::GET,
            &format!("/v1/topics/{ns}/{topic}"),
            token,
        )?;
        let (resp, _) = send
            .ready()
            .await
            .map_err(conn_err)?
            .send_request(req, true)
            .map_err(conn_err)?;
        let resp = resp.await.map_err(conn_err)?;
        if resp.status() != 200 {
            return Err(BenchError::Connection(format!(
                "subscribe refused: HTTP {}",
                resp.status()
            )));
        }
        Ok(H2Sub {
            body: resp.into_body(),
            buf: BytesMut::new(),
            frames: framing::Decoder::new(64 << 20),
            _driver: driver,
        })
    }

    pub async fn recv(&mut self, out: &mut Vec<Got>) -> Result<(), BenchError> {
        match self.body.data().await {
            Some(Ok(b)) => {
                let _ = self.body.flow_control().release_capacity(b.len());
                self.buf.extend_from_slice(&b);
            }
            Some(Err(e)) => return Err(conn_err(e)),
            None => {
                return Err(BenchError::Connection(
                    "broker ended an HTTP/2 stream".into(),
                ))
            }
        }
        while let Some(f) = self.frames.decode(&mut self.buf).map_err(conn_err)? {
            server_msg(&f, out)?;
        }
        Ok(())
    }
}

/// A publisher sending `POST`s on one HTTP/2 connection, one stream per message.
pub(crate) struct H2Pub {
    dialer: Dialer,
    send: H2Send,
    token: Option<String>,
    acks: Rc<Acks>,
    _driver: glommio::task::JoinHandle<()>,
}

impl H2Pub {
    pub async fn connect(
        d: &Dialer,
        token: Option<&str>,
        acks: Rc<Acks>,
    ) -> Result<H2Pub, BenchError> {
        let (send, driver) = h2_connect(d).await?;
        Ok(H2Pub {
            dialer: d.clone(),
            send,
            token: token.map(str::to_owned),
            acks,
            _driver: driver,
        })
    }

    pub async fn send(
        &mut self,
        ns: &str,
        topic: &str,
        payload: &[u8],
        intended: u64,
    ) -> Result<(), BenchError> {
        let req = h2_request(
            &self.dialer,
            http::Method::POST,
            &format!("/v1/topics/{ns}/{topic}"),
            self.token.as_deref(),
        )?;
        let mut send = self.send.clone().ready().await.map_err(conn_err)?;
        let (resp, mut tx) = send.send_request(req, false).map_err(conn_err)?;
        tx.send_data(Bytes::copy_from_slice(payload), true)
            .map_err(conn_err)?;
        let acks = self.acks.clone();
        glommio::spawn_local(async move {
            match resp.await {
                Ok(r) if r.status() == 200 => acks.ack(intended),
                Ok(r) => acks.fail(BenchError::Connection(format!(
                    "publish refused: HTTP {}",
                    r.status()
                ))),
                Err(e) => acks.fail(conn_err(e)),
            }
        })
        .detach();
        Ok(())
    }
}
