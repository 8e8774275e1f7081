//! Fanfare: a thread-per-core pub/sub broker for real-time fan-out.
//!
//! This crate is the facade: [`core`] is the embeddable engine, [`net`] the network front,
//! [`proto`] the wire protocol, and [`client`] the Rust clients: [`client::AsyncClient`]
//! (reconnects and resumes; used by `fanfare pub` and `fanfare sub`) and the small blocking
//! [`client::Client`].
//!
//! ```
//! use fanfare::core::{Broker, Event, Start};
//!
//! let broker = Broker::builder().shards(1).start()?;
//! let mut sub = broker.subscribe_blocking("chat", "room-1", Start::Latest)?;
//! broker.publish_blocking("chat", "room-1", "hi")?;
//! assert!(matches!(sub.next_blocking(), Some(Event::Item(_))));
//! broker.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![deny(unsafe_code)]
// Non-test code handles failures instead of panicking (issue 30); an invariant that cannot
// fail is allowed on its smallest scope, with the reason next to it.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod settings;

pub use fanfare_core as core;
pub use fanfare_net as net;
pub use fanfare_proto as proto;
