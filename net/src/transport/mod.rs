//! The protocols a connection can speak once the listener knows which: HTTP/1.1 (with the
//! WebSocket upgrade), WebSocket sessions, HTTP/2. HTTP requests of both versions go through
//! one route table ([`crate::api`]).

pub(crate) mod h2;
pub(crate) mod http1;
pub(crate) mod ws;
pub(crate) mod ws_session;
