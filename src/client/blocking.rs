//! A small blocking WebSocket client for Fanfare, built on the protocol crate's codecs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use fanfare_proto::message::{DecodeLimits, PresenceOpts, PresenceStateMsg};
use fanfare_proto::ws::{self, Message, Opcode, Role};
use fanfare_proto::{ClientMsg, Name, ServerMsg, Start, PROTOCOL_VERSION};

/// A connected client.
pub struct Client {
    stream: TcpStream,
    decoder: ws::Decoder,
    buf: BytesMut,
    next_mask: u32,
    limits: DecodeLimits,
}

impl Client {
    /// Connects to `url` (`ws://host:port[/path]`), upgrades and says hello.
    pub fn connect(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("only ws:// URLs are supported here, got {url}"))?;
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/v1/ws{}", &rest[i..])),
            None => (rest, "/v1/ws".to_owned()),
        };
        let stream =
            TcpStream::connect(host).with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        // The key only has to differ between connections (RFC 6455 4.1); time and pid do.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let nonce: [u8; 16] =
            std::array::from_fn(|i| (seed.rotate_left(i as u32 * 8) as u8) ^ (i as u8));
        let (req, key) = ws::client_request(host, &path, nonce, &[]);
        let mut c = Client {
            stream,
            decoder: ws::Decoder::new(
                Role::Client,
                ws::Limits {
                    frame_bytes_max: 64 << 20,
                    message_bytes_max: 64 << 20,
                },
            ),
            buf: BytesMut::new(),
            next_mask: 0x9E37_79B9,
            limits: DecodeLimits {
                payload_bytes_max: 64 << 20,
                ..DecodeLimits::default()
            },
        };
        c.stream.write_all(req.as_bytes())?;
        loop {
            if let Some(n) = ws::parse_client_response(&c.buf, &key)
                .map_err(|e| anyhow!("upgrade refused: {e}"))?
            {
                let _ = c.buf.split_to(n);
                break;
            }
            c.fill()?;
        }
        c.send(&ClientMsg::Hello {
            version_min: 1,
            version_max: PROTOCOL_VERSION,
            token: None,
        })?;
        match c.recv()? {
            ServerMsg::Welcome { .. } => Ok(c),
            ServerMsg::Error { text, .. } => bail!("server refused: {text}"),
            other => bail!("unexpected answer to hello: {other:?}"),
        }
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Sends one message.
    pub fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        // Masking keys need not be secret from the server; a varying key suffices (RFC 6455 10.3
        // guards against proxies, which a CLI talking to its broker does not cross).
        self.next_mask = self
            .next_mask
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let mut out = BytesMut::new();
        ws::encode_frame(
            &mut out,
            Opcode::Binary,
            true,
            &msg.encode_to_vec(),
            Some(self.next_mask.to_be_bytes()),
        );
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Receives the next server message (answering pings on the way).
    pub fn recv(&mut self) -> Result<ServerMsg> {
        loop {
            match self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| anyhow!("protocol error: {e}"))?
            {
                Some(Message::Binary(b)) => {
                    return ServerMsg::decode(&b, &self.limits)
                        .map_err(|e| anyhow!("bad message: {e}"))
                }
                Some(Message::Ping(p)) => {
                    let mut out = BytesMut::new();
                    ws::encode_frame(&mut out, Opcode::Pong, true, &p, Some([1, 2, 3, 4]));
                    self.stream.write_all(&out)?;
                }
                Some(Message::Close(c)) => bail!("server closed the connection: {c:?}"),
                Some(_) => {}
                None => self.fill()?,
            }
        }
    }

    /// Publishes and waits for the ack: `(epoch, seq)`.
    pub fn publish(&mut self, namespace: &str, topic: &str, payload: Bytes) -> Result<(u64, u64)> {
        self.publish_keyed(namespace, topic, payload, None)
    }

    /// [`Client::publish`] with an idempotency key: retrying with the same key (after a lost
    /// ack, a reconnect) is answered with the original `(epoch, seq)` and publishes nothing new,
    /// within the broker's idempotency window.
    pub fn publish_keyed(
        &mut self,
        namespace: &str,
        topic: &str,
        payload: Bytes,
        idempotency_key: Option<&str>,
    ) -> Result<(u64, u64)> {
        self.send(&ClientMsg::Publish {
            request_id: 1,
            namespace: Name::try_from(namespace).context("namespace")?,
            topic: Name::try_from(topic).context("topic")?,
            payload,
            idempotency_key: idempotency_key.map(str::to_owned),
        })?;
        loop {
            match self.recv()? {
                ServerMsg::PublishAck { epoch, seq, .. } => return Ok((epoch, seq)),
                ServerMsg::Error { text, .. } => bail!("publish refused: {text}"),
                _ => {}
            }
        }
    }

    /// Subscribes; returns the `Subscribed` answer.
    pub fn subscribe(&mut self, namespace: &str, topic: &str, from: Start) -> Result<ServerMsg> {
        self.subscribe_with(namespace, topic, from, None)
    }

    /// [`Client::subscribe`] with presence options: enter the topic's member list, and/or
    /// receive `PresenceEvent`s (join, leave, occupancy). `Subscribed` carries the member id.
    pub fn subscribe_with(
        &mut self,
        namespace: &str,
        topic: &str,
        from: Start,
        presence: Option<PresenceOpts>,
    ) -> Result<ServerMsg> {
        self.send(&ClientMsg::Subscribe {
            request_id: 1,
            namespace: Name::try_from(namespace).context("namespace")?,
            topic: Name::try_from(topic).context("topic")?,
            from,
            presence,
        })?;
        loop {
            match self.recv()? {
                m @ ServerMsg::Subscribed { .. } => return Ok(m),
                ServerMsg::Error { text, .. } => bail!("subscribe refused: {text}"),
                _ => {}
            }
        }
    }

    /// A topic's occupancy and, with `members`, one page of members (ids above `after`,
    /// `limit` of them; 0: the server's default).
    pub fn presence(
        &mut self,
        namespace: &str,
        topic: &str,
        members: bool,
        after: u64,
        limit: u32,
    ) -> Result<PresenceStateMsg> {
        const ID: u64 = 2;
        self.send(&ClientMsg::PresenceQuery {
            request_id: ID,
            namespace: Name::try_from(namespace).context("namespace")?,
            topic: Name::try_from(topic).context("topic")?,
            members,
            after,
            limit,
        })?;
        loop {
            match self.recv()? {
                ServerMsg::PresenceState {
                    request_id: ID,
                    state,
                } => return Ok(state),
                ServerMsg::Error {
                    request_id: ID,
                    text,
                    ..
                } => bail!("presence query refused: {text}"),
                _ => {}
            }
        }
    }

    /// Sets a read timeout for [`Client::recv`].
    pub fn set_read_timeout(&self, d: Option<Duration>) -> Result<()> {
        Ok(self.stream.set_read_timeout(d)?)
    }
}
