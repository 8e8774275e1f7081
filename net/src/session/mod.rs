//! A connection's session: its subscriptions and bounded send queue ([`Conn`], the engine's
//! [`fanfare_core::Sink`]), the encoder of its transport mode ([`encoder`]), and its output
//! ([`flush`]: the queue to the socket, driven by the connection's own task).

pub(crate) mod conn;
pub(crate) mod encoder;
pub(crate) mod flush;
mod queue;
mod subs;

pub(crate) use conn::{Conn, Frame, Next};
pub(crate) use encoder::Encoder;
