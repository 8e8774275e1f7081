//! One subscriber or publisher connection, whatever the broker and transport.

use std::rc::Rc;

use crate::replies::{Acks, Got};
use crate::scenario::{BenchError, Scenario, Transport};
use crate::target::{Kind, Target};
use crate::{fanfare, nats, redis};

pub(crate) enum Sub {
    Ws(fanfare::Ws),
    Sse(fanfare::Sse),
    H2(fanfare::H2Sub),
    Redis(redis::RedisSub),
    Nats(nats::NatsSub),
}

impl Sub {
    pub(crate) async fn open(t: &Target, s: &Scenario, topic: &str) -> Result<Sub, BenchError> {
        let token = s.token.as_deref();
        let ns = s.namespace.as_str();
        Ok(match (t.kind, s.transport) {
            (Kind::Redis, _) => Sub::Redis(redis::RedisSub::subscribe(&t.http1, topic).await?),
            (Kind::Nats, _) => Sub::Nats(nats::NatsSub::subscribe(&t.http1, topic).await?),
            (Kind::Fanfare, Transport::Ws) => Sub::Ws(
                fanfare::Ws::connect(&t.http1, &t.path, token)
                    .await?
                    .subscribe(ns, topic)
                    .await?,
            ),
            (Kind::Fanfare, Transport::Sse) => {
                Sub::Sse(fanfare::Sse::subscribe(&t.http1, ns, topic, token).await?)
            }
            (Kind::Fanfare, Transport::H2) => {
                Sub::H2(fanfare::H2Sub::subscribe(&t.h2, ns, topic, token).await?)
            }
        })
    }

    pub(crate) async fn recv(&mut self, out: &mut Vec<Got>) -> Result<(), BenchError> {
        match self {
            Sub::Ws(c) => c.recv(out).await,
            Sub::Sse(c) => c.recv(out).await,
            Sub::H2(c) => c.recv(out).await,
            Sub::Redis(c) => c.recv(out).await,
            Sub::Nats(c) => c.recv(out).await,
        }
    }
}

pub(crate) enum Pub {
    Ws(fanfare::WsPub),
    H2(fanfare::H2Pub),
    Redis(redis::RedisPub),
    Nats(nats::NatsPub),
}

impl Pub {
    pub(crate) async fn open(t: &Target, s: &Scenario, acks: Rc<Acks>) -> Result<Pub, BenchError> {
        let token = s.token.as_deref();
        Ok(match (t.kind, s.transport) {
            (Kind::Redis, _) => {
                Pub::Redis(redis::RedisPub::connect(&t.http1, s.durable, acks).await?)
            }
            (Kind::Nats, _) => Pub::Nats(
                nats::NatsPub::connect(
                    &t.http1,
                    s.window,
                    s.durable.then_some(s.namespace.as_str()),
                    acks,
                )
                .await?,
            ),
            (Kind::Fanfare, Transport::H2) => {
                Pub::H2(fanfare::H2Pub::connect(&t.h2, token, acks).await?)
            }
            (Kind::Fanfare, Transport::Ws | Transport::Sse) => Pub::Ws(
                fanfare::Ws::connect(&t.http1, &t.path, token)
                    .await?
                    .into_publisher(acks, s.idempotency_keys),
            ),
        })
    }

    /// Queues one publish (HTTP/2 sends it at once; the others append to a pending write).
    pub(crate) async fn push(
        &mut self,
        ns: &str,
        topic: &str,
        payload: &[u8],
        intended: u64,
    ) -> Result<(), BenchError> {
        match self {
            Pub::Ws(p) => p.push(ns, topic, payload, intended),
            Pub::H2(p) => p.send(ns, topic, payload, intended).await?,
            Pub::Redis(p) => p.push(topic, payload, intended),
            Pub::Nats(p) => p.push(topic, payload, intended),
        }
        Ok(())
    }

    /// Writes the pending publishes in one write.
    pub(crate) async fn write(&mut self) -> Result<(), BenchError> {
        match self {
            Pub::Ws(p) => p.write().await,
            Pub::H2(_) => Ok(()),
            Pub::Redis(p) => p.write().await,
            Pub::Nats(p) => p.write().await,
        }
    }

    /// Writes, and asks for acknowledgements of everything sent (NATS batches them).
    pub(crate) async fn flush(&mut self) -> Result<(), BenchError> {
        match self {
            Pub::Nats(p) => p.flush().await,
            _ => self.write().await,
        }
    }
}
