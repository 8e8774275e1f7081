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

/// Whether an error from [`AsyncClient`] is the server saying no (a refused token or
/// protocol version, an upgrade answered with an error status): retrying cannot fix it,
/// unlike a server that is not up.
pub fn is_refused(e: &anyhow::Error) -> bool {
    dial::is_refusal(e)
}
