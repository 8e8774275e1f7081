//! The generator's one clock: nanoseconds since the first call, shared by every thread.

use std::sync::OnceLock;
use std::time::Instant;

pub(crate) fn clock() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

pub(crate) fn now_ns() -> u64 {
    clock().elapsed().as_nanos() as u64
}
