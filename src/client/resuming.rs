//! [`AsyncClient`]: a client that stays connected. It is driven by its owner (no background
//! task, so it runs on any executor): every call that needs the connection reconnects when it
//! is gone, with exponential back-off and full jitter, and resubscribes every subscription from
//! its position, so the application sees each message once, in order, or an
//! [`Event::Discontinuity`] saying exactly what it missed.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use fanfare_proto::message::{DecodeLimits, PresenceOpts, PresenceStateMsg};

use super::dial::{is_refusal, tls_connector, within, Elapsed, Refused};
use super::options::{ClientOptions, Event};
use fanfare_proto::ws::{self, Message, Opcode, Role};
use fanfare_proto::{ClientMsg, Name, ServerMsg, Start, PROTOCOL_VERSION};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One subscription's state across connections.
struct Sub {
    namespace: Name,
    topic: Name,
    from: Start,
    presence: Option<PresenceOpts>,
    /// The epoch and next sequence it delivers.
    position: Option<(u64, u64)>,
    /// Its position when it was asked for again, until the server says what happened.
    resumed_from: Option<(u64, u64)>,
    /// The subscribe request in flight on this connection.
    request: u64,
}

struct Conn {
    stream: Pin<Box<dyn Io>>,
    decoder: ws::Decoder,
    rbuf: BytesMut,
    /// Server subscription id -> index in `subs`.
    wire: HashMap<u64, usize>,
    last_received: Instant,
}

/// A Fanfare client that reconnects and resumes on its own. See the module docs.
pub struct AsyncClient {
    opts: ClientOptions,
    tls: Option<(
        futures_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    host: String,
    path: String,
    conn: Option<Conn>,
    subs: Vec<Sub>,
    events: VecDeque<Event>,
    next_id: u64,
    next_mask: u32,
    attempt: u32,
    limits: DecodeLimits,
}

impl AsyncClient {
    /// Connects (retrying with back-off up to `connect_timeout`: a server that is not up yet
    /// is waited for, a refused token or a bad URL fails at once).
    pub async fn connect(opts: ClientOptions) -> Result<Self> {
        let (tls, rest) = match opts.url.split_once("://") {
            Some(("ws", rest)) => (false, rest),
            Some(("wss", rest)) => (true, rest),
            _ => bail!("the URL must be ws:// or wss://, got {}", opts.url),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
            None => (rest.to_owned(), "/v1/ws".to_owned()),
        };
        let tls = if tls {
            let ca = opts
                .ca
                .as_deref()
                .ok_or_else(|| anyhow!("wss:// needs the CA to trust (--ca <PEM>)"))?;
            Some(tls_connector(&host, ca)?)
        } else {
            None
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u32)
            | 1;
        let mut c = AsyncClient {
            opts,
            tls,
            host,
            path,
            conn: None,
            subs: Vec::new(),
            events: VecDeque::new(),
            next_id: 1,
            next_mask: seed,
            attempt: 0,
            limits: DecodeLimits {
                payload_bytes_max: 64 << 20,
                ..DecodeLimits::default()
            },
        };
        let deadline = Instant::now() + c.opts.connect_timeout;
        loop {
            match c.open().await {
                Ok(()) => return Ok(c),
                Err(e) if is_refusal(&e) || Instant::now() >= deadline => return Err(e),
                Err(_) => c.back_off(deadline).await,
            }
        }
    }

    /// Subscribes to a topic from `from`; its events come from [`AsyncClient::next_event`],
    /// starting with [`Event::Subscribed`]. After a reconnect it resumes from its position.
    pub async fn subscribe(&mut self, namespace: &str, topic: &str, from: Start) -> Result<()> {
        self.subscribe_with(namespace, topic, from, None).await
    }

    /// [`AsyncClient::subscribe`] with presence options.
    pub async fn subscribe_with(
        &mut self,
        namespace: &str,
        topic: &str,
        from: Start,
        presence: Option<PresenceOpts>,
    ) -> Result<()> {
        let sub = Sub {
            namespace: Name::try_from(namespace).context("namespace")?,
            topic: Name::try_from(topic).context("topic")?,
            from,
            presence,
            position: None,
            resumed_from: None,
            request: 0,
        };
        if self
            .subs
            .iter()
            .any(|s| s.namespace == sub.namespace && s.topic == sub.topic)
        {
            bail!("already subscribed to {namespace}/{topic}");
        }
        self.subs.push(sub);
        let i = self.subs.len() - 1;
        if self.conn.is_some() {
            if let Err(e) = self.send_subscribe(i).await {
                self.lost(e);
            }
        }
        Ok(())
    }

    /// Publishes `payload`; resolves with `(epoch, seq)` once ordered. The publish carries an
    /// idempotency key (`key`, or a random one): if the connection drops before the answer, it
    /// is sent again after reconnecting and lands once. Events that arrive meanwhile wait for
    /// [`AsyncClient::next_event`].
    pub async fn publish(
        &mut self,
        namespace: &str,
        topic: &str,
        payload: Bytes,
        key: Option<&str>,
    ) -> Result<(u64, u64)> {
        let namespace = Name::try_from(namespace).context("namespace")?;
        let topic = Name::try_from(topic).context("topic")?;
        let key = key.map_or_else(|| self.random_key(), str::to_owned);
        let deadline = Instant::now() + self.opts.request_timeout;
        loop {
            if Instant::now() >= deadline {
                bail!("publish to {namespace}/{topic} not answered in time");
            }
            self.ensure_connected(deadline).await?;
            let id = self.fresh_id();
            let msg = ClientMsg::Publish {
                request_id: id,
                namespace: namespace.clone(),
                topic: topic.clone(),
                payload: payload.clone(),
                idempotency_key: Some(key.clone()),
            };
            if let Err(e) = self.send(&msg).await {
                self.lost(e);
                continue;
            }
            loop {
                let m = match self.read(deadline).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break, // lost: send again after reconnecting
                    Err(e) => return Err(e),
                };
                match m {
                    ServerMsg::PublishAck {
                        request_id,
                        epoch,
                        seq,
                        ..
                    } if request_id == id => return Ok((epoch, seq)),
                    ServerMsg::Error {
                        request_id,
                        code,
                        text,
                    } if request_id == id => {
                        use fanfare_proto::ErrorCode as C;
                        if matches!(code, C::Unavailable | C::ShuttingDown | C::Overloaded) {
                            async_io::Timer::after(Duration::from_millis(200)).await;
                            break;
                        }
                        bail!("publish refused ({code:?}): {text}");
                    }
                    other => self.on_message(other),
                }
            }
        }
    }

    /// A topic's occupancy and, with `members`, a page of its members.
    pub async fn presence(
        &mut self,
        namespace: &str,
        topic: &str,
        members: bool,
        after: u64,
        limit: u32,
    ) -> Result<PresenceStateMsg> {
        let namespace = Name::try_from(namespace).context("namespace")?;
        let topic = Name::try_from(topic).context("topic")?;
        let deadline = Instant::now() + self.opts.request_timeout;
        loop {
            if Instant::now() >= deadline {
                bail!("presence of {namespace}/{topic} not answered in time");
            }
            self.ensure_connected(deadline).await?;
            let id = self.fresh_id();
            let msg = ClientMsg::PresenceQuery {
                request_id: id,
                namespace: namespace.clone(),
                topic: topic.clone(),
                members,
                after,
                limit,
            };
            if let Err(e) = self.send(&msg).await {
                self.lost(e);
                continue;
            }
            loop {
                match self.read(deadline).await? {
                    None => break,
                    Some(ServerMsg::PresenceState { request_id, state }) if request_id == id => {
                        return Ok(state)
                    }
                    Some(ServerMsg::Error {
                        request_id, text, ..
                    }) if request_id == id => bail!("presence query refused: {text}"),
                    Some(other) => self.on_message(other),
                }
            }
        }
    }

    /// The next event: reconnects (with back-off) when the connection is gone, so it only
    /// fails for good reasons (a refused token). Cancel-safe between messages.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            if self.conn.is_none() {
                match self.open().await {
                    Ok(()) => {
                        self.events.push_back(Event::Reconnected);
                        continue;
                    }
                    Err(e) if is_refusal(&e) => return Err(e),
                    Err(_) => {
                        // No deadline: the back-off's own ceiling bounds the wait.
                        self.back_off(Instant::now() + self.opts.reconnect_max)
                            .await;
                        continue;
                    }
                }
            }
            let far = Instant::now() + Duration::from_secs(3600);
            if let Some(m) = self.read(far).await? {
                self.on_message(m);
            }
        }
    }

    /// The position of the subscription to `namespace/topic`: `(epoch, next_seq)`.
    pub fn position(&self, namespace: &str, topic: &str) -> Option<(u64, u64)> {
        self.subs
            .iter()
            .find(|s| &*s.namespace == namespace && &*s.topic == topic)?
            .position
    }

    // ------------------------------------------------------------------ connection

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn random_key(&mut self) -> String {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "{t:x}-{:x}-{:x}",
            std::process::id(),
            self.next_mask_value()
        )
    }

    fn next_mask_value(&mut self) -> u32 {
        // xorshift32: masking keys and key suffixes need only vary.
        let mut x = self.next_mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.next_mask = x;
        x
    }

    /// Waits before the next attempt: a jittered, growing delay, never past `deadline` (one
    /// last attempt is made there).
    async fn back_off(&mut self, deadline: Instant) {
        let ceiling = self
            .opts
            .reconnect_min
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.opts.reconnect_max);
        self.attempt += 1;
        let jitter = f64::from(self.next_mask_value()) / f64::from(u32::MAX);
        let left = deadline.saturating_duration_since(Instant::now());
        async_io::Timer::after(ceiling.mul_f64(jitter).min(left)).await;
    }

    async fn ensure_connected(&mut self, deadline: Instant) -> Result<()> {
        while self.conn.is_none() {
            match self.open().await {
                Ok(()) => self.events.push_back(Event::Reconnected),
                Err(e) if is_refusal(&e) || Instant::now() >= deadline => return Err(e),
                Err(_) => self.back_off(deadline).await,
            }
        }
        Ok(())
    }

    /// Connects, upgrades, says hello, and asks again for every subscription.
    async fn open(&mut self) -> Result<()> {
        let timeout = self.opts.request_timeout;
        let tcp = within(timeout, async_net::TcpStream::connect(self.host.as_str()))
            .await
            .with_context(|| format!("cannot connect to {}", self.host))?;
        let _ = tcp.set_nodelay(true);
        let stream: Pin<Box<dyn Io>> = match &self.tls {
            None => Box::pin(tcp),
            Some((connector, name)) => Box::pin(
                within(timeout, connector.connect(name.clone(), tcp))
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.host))?,
            ),
        };
        let mut conn = Conn {
            stream,
            decoder: ws::Decoder::new(
                Role::Client,
                ws::Limits {
                    frame_bytes_max: 64 << 20,
                    message_bytes_max: 64 << 20,
                },
            ),
            rbuf: BytesMut::new(),
            wire: HashMap::new(),
            last_received: Instant::now(),
        };
        let nonce: [u8; 16] = std::array::from_fn(|_| self.next_mask_value() as u8);
        let (req, key) = ws::client_request(&self.host, &self.path, nonce, &[]);
        conn.stream.write_all(req.as_bytes()).await?;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if let Some(n) = ws::parse_client_response(&conn.rbuf, &key)
                .map_err(|e| Refused(format!("the upgrade was answered {e}")))?
            {
                let _ = conn.rbuf.split_to(n);
                break;
            }
            let n = within(timeout, conn.stream.read(&mut chunk)).await?;
            if n == 0 {
                bail!("connection closed during the upgrade");
            }
            conn.rbuf.extend_from_slice(&chunk[..n]);
        }
        self.conn = Some(conn);
        let hello = ClientMsg::Hello {
            version_min: 1,
            version_max: PROTOCOL_VERSION,
            token: self.opts.token.clone(),
        };
        self.send(&hello).await?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.read(deadline).await? {
                Some(ServerMsg::Welcome { .. }) => break,
                Some(ServerMsg::Error { text, code, .. }) => {
                    self.conn = None;
                    return Err(Refused(format!("{code:?}: {text}")).into());
                }
                Some(other) => self.on_message(other),
                None => bail!("connection closed before the server's welcome"),
            }
        }
        self.attempt = 0;
        for i in 0..self.subs.len() {
            self.send_subscribe(i).await?;
        }
        Ok(())
    }

    async fn send_subscribe(&mut self, i: usize) -> Result<()> {
        let id = self.fresh_id();
        let s = &mut self.subs[i];
        s.request = id;
        s.resumed_from = s.position;
        let from = match s.position {
            Some((epoch, seq)) => Start::At { epoch, seq },
            None => s.from,
        };
        let msg = ClientMsg::Subscribe {
            request_id: id,
            namespace: s.namespace.clone(),
            topic: s.topic.clone(),
            from,
            presence: s.presence.clone(),
        };
        self.send(&msg).await
    }

    async fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        let mask = self.next_mask_value().to_be_bytes();
        let conn = self.conn.as_mut().ok_or_else(|| anyhow!("not connected"))?;
        let mut out = BytesMut::new();
        ws::encode_frame(
            &mut out,
            Opcode::Binary,
            true,
            &msg.encode_to_vec(),
            Some(mask),
        );
        conn.stream.write_all(&out).await?;
        Ok(())
    }

    /// The connection is gone: forget it, and tell the application.
    fn lost(&mut self, why: anyhow::Error) {
        if self.conn.take().is_some() {
            self.events.push_back(Event::Disconnected {
                reason: format!("{why:#}"),
            });
        }
    }

    /// The next server message; `Ok(None)` when the connection was lost (it is reopened by
    /// the next call that needs it), an error only when `deadline` passed.
    async fn read(&mut self, deadline: Instant) -> Result<Option<ServerMsg>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let idle = self.opts.idle_timeout;
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match conn.decoder.decode(&mut conn.rbuf) {
                Ok(Some(Message::Binary(b))) => match ServerMsg::decode(&b, &self.limits) {
                    Ok(m) => return Ok(Some(m)),
                    Err(e) => {
                        self.lost(anyhow!("bad message from the server: {e}"));
                        return Ok(None);
                    }
                },
                Ok(Some(Message::Ping(p))) => {
                    let mut out = BytesMut::new();
                    let mask = self.next_mask.to_be_bytes();
                    ws::encode_frame(&mut out, Opcode::Pong, true, &p, Some(mask));
                    if let Err(e) = conn.stream.write_all(&out).await {
                        self.lost(e.into());
                        return Ok(None);
                    }
                    continue;
                }
                Ok(Some(Message::Close(c))) => {
                    self.lost(anyhow!("the server closed the connection: {c:?}"));
                    return Ok(None);
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    self.lost(anyhow!("protocol error: {e}"));
                    return Ok(None);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("not answered in time");
            }
            let dead_at = conn.last_received + idle;
            if now >= dead_at {
                self.lost(anyhow!("nothing received for {idle:?}"));
                return Ok(None);
            }
            let wait = deadline.min(dead_at) - now;
            match within(wait, conn.stream.read(&mut chunk)).await {
                Ok(0) => {
                    self.lost(anyhow!("the server closed the connection"));
                    return Ok(None);
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&chunk[..n]);
                    conn.last_received = Instant::now();
                }
                Err(e) if e.downcast_ref::<Elapsed>().is_some() => continue,
                Err(e) => {
                    self.lost(e);
                    return Ok(None);
                }
            }
        }
    }

    // ------------------------------------------------------------------ messages

    fn names(&self, i: usize) -> (String, String) {
        let s = &self.subs[i];
        (s.namespace.to_string(), s.topic.to_string())
    }

    fn on_message(&mut self, m: ServerMsg) {
        match m {
            ServerMsg::Subscribed {
                request_id,
                subscription_id,
                epoch,
                next_seq,
                ..
            } => {
                let Some(i) = self.subs.iter().position(|s| s.request == request_id) else {
                    return;
                };
                if let Some(c) = self.conn.as_mut() {
                    c.wire.insert(subscription_id, i);
                }
                let resumed = self.subs[i].resumed_from.is_some();
                self.subs[i].position = Some((epoch, next_seq));
                let (namespace, topic) = self.names(i);
                self.events.push_back(Event::Subscribed {
                    namespace,
                    topic,
                    epoch,
                    next_seq,
                    resumed,
                });
            }
            ServerMsg::Item(it) => self.on_item(it),
            ServerMsg::ItemBatch(items) => items.into_iter().for_each(|it| self.on_item(it)),
            ServerMsg::Discontinuity {
                subscription_id,
                last_seq,
                new_seq,
                new_epoch,
            } => {
                let Some(i) = self.sub_of(subscription_id) else {
                    return;
                };
                let s = &mut self.subs[i];
                let before = s.resumed_from.take().or(s.position);
                let last_epoch = before.map_or(new_epoch, |(e, _)| e);
                s.position = Some((new_epoch, new_seq));
                let (namespace, topic) = self.names(i);
                self.events.push_back(Event::Discontinuity {
                    namespace,
                    topic,
                    last_epoch,
                    last_seq,
                    new_epoch,
                    new_seq,
                });
            }
            ServerMsg::PresenceEvent {
                subscription_id,
                event,
            } => {
                if let Some(i) = self.sub_of(subscription_id) {
                    let (namespace, topic) = self.names(i);
                    self.events.push_back(Event::Presence {
                        namespace,
                        topic,
                        event,
                    });
                }
            }
            ServerMsg::SubscriptionClosed {
                subscription_id,
                text,
                ..
            } => {
                // Too slow or shutting down: the reconnect (or the next resubscribe) resumes it.
                self.lost(anyhow!("subscription {subscription_id} closed: {text}"));
            }
            ServerMsg::Error {
                request_id, text, ..
            } => {
                if let Some(i) = self.subs.iter().position(|s| s.request == request_id) {
                    let (namespace, topic) = self.names(i);
                    self.subs.remove(i);
                    if let Some(c) = self.conn.as_mut() {
                        c.wire.retain(|_, j| *j != i);
                        c.wire
                            .values_mut()
                            .filter(|j| **j > i)
                            .for_each(|j| *j -= 1);
                    }
                    self.events.push_back(Event::Disconnected {
                        reason: format!("subscription to {namespace}/{topic} refused: {text}"),
                    });
                }
            }
            _ => {}
        }
    }

    fn sub_of(&self, wire: u64) -> Option<usize> {
        self.conn.as_ref()?.wire.get(&wire).copied()
    }

    fn on_item(&mut self, it: fanfare_proto::ItemMsg) {
        let Some(i) = self.sub_of(it.subscription_id) else {
            return;
        };
        let (namespace, topic) = self.names(i);
        let s = &mut self.subs[i];
        let Some((epoch, next)) = s.position else {
            return;
        };
        if let Some((e0, n0)) = s.resumed_from.take() {
            if (e0, n0) != (epoch, next) {
                // Moved without a word from the server (it always sends one): say it here.
                self.events.push_back(Event::Discontinuity {
                    namespace: namespace.clone(),
                    topic: topic.clone(),
                    last_epoch: e0,
                    last_seq: n0.saturating_sub(1),
                    new_epoch: epoch,
                    new_seq: next,
                });
            }
        }
        if it.epoch == epoch && it.seq < next {
            return; // delivered already
        }
        if it.epoch != epoch || it.seq != next {
            self.events.push_back(Event::Discontinuity {
                namespace: namespace.clone(),
                topic: topic.clone(),
                last_epoch: epoch,
                last_seq: next.saturating_sub(1),
                new_epoch: it.epoch,
                new_seq: it.seq,
            });
        }
        self.subs[i].position = Some((it.epoch, it.seq + 1));
        self.events.push_back(Event::Message {
            namespace,
            topic,
            epoch: it.epoch,
            seq: it.seq,
            payload: it.payload,
            publisher_id: it.publisher_id,
        });
    }
}
