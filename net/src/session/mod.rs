//! A connection's session: its subscriptions and bounded send queue ([`Conn`], the engine's
//! [`fanfare_core::Sink`]), the encoder of its transport mode ([`encoder`]), and the writer
//! that drains the queue ([`writer`]).

pub(crate) mod conn;
pub(crate) mod encoder;
pub(crate) mod writer;

pub(crate) use conn::{Conn, Frame, Next};
pub(crate) use encoder::Encoder;
