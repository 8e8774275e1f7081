//! Fanfare's load generator (`fanfare bench`) and criterion benchmarks (`benches/`).
//!
//! The generator runs on its own thread-per-core runtime (one glommio executor per
//! generator thread), opens publishers and subscribers against a broker, and measures what
//! subscribers receive:
//!
//! - every payload carries the publisher's id, a per-(publisher, topic) sequence and the
//!   **intended** send time; latency is measured from the intended time, so a generator or
//!   broker that falls behind a fixed rate shows up in the percentiles instead of hiding
//!   (coordinated omission);
//! - each subscriber checks the broker's `(epoch, seq)` per subscription where the broker has
//!   one (Fanfare: gaps, duplicates, announced discontinuities), and each publisher's sequence
//!   (reorders; for brokers without sequences also gaps and duplicates);
//! - the generator reports its own CPU use and warns when it, not the broker, is the
//!   bottleneck.
//!
//! Targets: Fanfare over WebSocket (`ws://`, `wss://`), Server-Sent Events or HTTP/2
//! ([`Transport`]); Redis pub/sub (`redis://`, RESP) and NATS core (`nats://`), so one tool and
//! one method compare brokers.
#![warn(missing_docs)]
// Non-test code handles failures instead of panicking (issue 30); an invariant that cannot
// fail is allowed on its smallest scope, with the reason next to it.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod clients;
mod clock;
mod fanfare;
mod io;
mod nats;
mod redis;
mod replies;
mod report;
mod runner;
mod scenario;
mod target;

pub use report::{Percentiles, Progress, Report};
pub use runner::run;
pub use scenario::{BenchError, Scenario, Transport, PAYLOAD_HEADER_BYTES};
