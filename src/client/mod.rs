//! Clients of the Fanfare protocol over WebSocket (docs/clients.md).
//!
//! - [`AsyncClient`]: async, for any executor (tokio, glommio, `block_on`): reconnects with
//!   jittered back-off, resumes every subscription from its position, retries publishes with
//!   their idempotency key, speaks `wss://` with a custom CA. `fanfare pub` and `fanfare sub`
//!   use it.
//! - [`Client`]: blocking, one connection, no reconnect; for simple programs and tests.

mod blocking;
mod dial;
mod options;
mod resuming;

pub use blocking::Client;
pub use options::{ClientOptions, Event};
pub use resuming::AsyncClient;
