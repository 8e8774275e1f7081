//! Giving freed memory back to the system.
//!
//! A connection storm grows the heap; when those connections close, the allocator keeps the
//! freed memory for reuse, scattered through the heap, so the process's RSS stays at its peak
//! (measured: 9 MB idle, 40 MB after 10,000 connections came and went). glibc's
//! `malloc_trim(0)` returns every free page, in every arena, to the kernel; each shard's sweep
//! calls it after a wave of closes (docs/ARCHITECTURE.md, "What a connection costs"), as
//! [`TrimPolicy`] decides. The hot path never calls it.

use std::time::{Duration, Instant};

/// Connections a shard sees close before it gives freed memory back.
pub(crate) const TRIM_AFTER_CLOSED: usize = 256;
/// Shortest time between two trims while connections keep closing.
pub(crate) const TRIM_INTERVAL_MIN: Duration = Duration::from_secs(5);

/// When a shard's sweep gives freed memory back, from the count of connections closed since
/// the last trim, read once per sweep tick.
///
/// - a wave (at least [`TRIM_AFTER_CLOSED`] closes) is trimmed on the first tick that saw no
///   new close, so the trim comes after the last of its frees, not in the middle of them;
/// - closes that never stop are trimmed at most every [`TRIM_INTERVAL_MIN`];
/// - closes that follow a wave's trim are trimmed again once they stop, whatever their number
///   (a wave may pause for a tick before its last closes, and those tend to free the most:
///   the maps and vectors shrink when they empty);
/// - a few closes now and then (fewer than [`TRIM_AFTER_CLOSED`], no wave before them) are
///   left to the allocator's own reuse.
#[derive(Debug)]
pub(crate) struct TrimPolicy {
    last_trim: Instant,
    closed_last_tick: usize,
    tail_owed: bool,
}

impl TrimPolicy {
    /// A policy whose last trim was at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        TrimPolicy {
            last_trim: now,
            closed_last_tick: 0,
            tail_owed: false,
        }
    }

    /// Called once per sweep tick with the closes counted since the last trim; `true` means
    /// trim now (and reset that count to zero).
    pub(crate) fn tick(&mut self, closed_since_trim: usize, now: Instant) -> bool {
        let quiet = closed_since_trim == self.closed_last_tick;
        self.closed_last_tick = closed_since_trim;
        let wave = closed_since_trim >= TRIM_AFTER_CLOSED;
        let ended = closed_since_trim > 0 && quiet && (wave || self.tail_owed);
        let churning = wave && now.saturating_duration_since(self.last_trim) >= TRIM_INTERVAL_MIN;
        if !(ended || churning) {
            return false;
        }
        self.last_trim = now;
        self.closed_last_tick = 0;
        // A wave's last closes (and what they free) may come after its trim, however few.
        self.tail_owed = wave;
        true
    }
}

/// Returns free heap pages to the system; `false` where the C library has no such call
/// (anything but glibc) or nothing was returned.
pub(crate) fn give_back() -> bool {
    trim()
}

/// glibc's per-thread cache (tcache) keeps up to 7 freed blocks of each small size (up to
/// 1,032 bytes) for the thread's next allocations. After a storm those blocks lie scattered
/// through the heap, each one pinning the page it sits on and splitting the free space around
/// it, where `malloc_trim` cannot reach: measured after a 10,000-connection storm, ~200 such
/// blocks held ~100 pages of their own and cut the free space into ~170 chunks whose first
/// pages stay resident. So before trimming, the calling thread's cached blocks are taken out
/// (allocating more than the cache holds of each size) and freed again in the order that
/// fills the cache with the newest blocks first, which sends the old scattered ones back to
/// the heap's free lists, where they merge with their neighbours and are trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const CACHE_DRAIN_PER_SIZE: usize = 16;

/// One of the crate's three `unsafe` places (with [`prefetch`] and handing a listener to
/// glommio in `ports`): foreign calls to glibc's allocator.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    use std::os::raw::{c_int, c_void};
    extern "C" {
        // glibc, <malloc.h>: int malloc_trim(size_t pad).
        fn malloc_trim(pad: usize) -> c_int;
        fn malloc(size: usize) -> *mut c_void;
        fn free(ptr: *mut c_void);
    }
    let mut held = [std::ptr::null_mut::<c_void>(); CACHE_DRAIN_PER_SIZE];
    // Every size the cache holds: chunk sizes 32..=1040 in steps of 16 (requests 16k - 8).
    for k in 2..=65usize {
        for slot in held.iter_mut() {
            // SAFETY: malloc takes a size; a null result (out of memory) is kept as null and
            // skipped below. black_box keeps the pair from being optimised away.
            *slot = std::hint::black_box(unsafe { malloc(16 * k - 8) });
        }
        // Newest first: they refill the cache, so the oldest (taken from the cache first)
        // find it full and go back to the heap.
        for ptr in held.iter_mut().rev() {
            if !ptr.is_null() {
                // SAFETY: each pointer came from malloc above and is freed exactly once.
                unsafe { free(*ptr) };
            }
            *ptr = std::ptr::null_mut();
        }
    }
    // SAFETY: malloc_trim takes no pointers; it locks each arena while it walks it.
    unsafe { malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// Asks the CPU to start loading the cache lines of `len` bytes at `start` (any address: an
/// address that is not mapped is ignored) without waiting for them: for state that will be
/// read or written a little later and is likely out of cache (a fan-out touches every
/// subscriber's connection once per message, and with hundreds of them each touch is a miss).
/// Has no effect on what the program computes.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn prefetch(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        while off < len {
            // SAFETY: a prefetch never faults and never changes memory, whatever the address
            // (the pointer is not dereferenced; `wrapping_add` makes no claim about it), and
            // SSE, which the instruction needs, is part of every x86_64 CPU.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(off).cast::<i8>()) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// [`prefetch`] of `value`, at most `max_bytes` of it.
#[inline]
pub(crate) fn prefetch_value<T>(value: &T, max_bytes: usize) {
    prefetch(
        (value as *const T).cast(),
        std::mem::size_of::<T>().min(max_bytes),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds cumulative close counts, one per tick a second apart; returns the ticks that trim.
    fn run(closes_per_tick: &[usize]) -> Vec<usize> {
        let start = Instant::now();
        let mut p = TrimPolicy::new(start);
        let mut since = 0;
        let mut trims = vec![];
        for (i, n) in closes_per_tick.iter().enumerate() {
            since += n;
            if p.tick(since, start + Duration::from_millis(1000 * (i as u64 + 1))) {
                trims.push(i);
                since = 0;
            }
        }
        trims
    }

    #[test]
    fn a_wave_is_trimmed_once_it_has_ended() {
        // 10,000 closes over two ticks, then quiet: one trim, on the first quiet tick.
        assert_eq!(run(&[6000, 4000, 0, 0, 0]), vec![2]);
    }

    #[test]
    fn the_tail_after_a_trim_into_a_wave_is_trimmed_when_it_stops() {
        // Closes every tick (a trim after 5 s of them), a tail of 10, then quiet.
        assert_eq!(run(&[300, 300, 300, 300, 300, 10, 0, 0]), vec![4, 6]);
        // Churn that goes on: a trim every 5 s, and one when it stops.
        assert_eq!(run(&[300; 12]), vec![4, 9]);
        let mut closes = vec![300; 8];
        closes.extend([10, 0, 0]);
        assert_eq!(run(&closes), vec![4, 9]);
    }

    #[test]
    fn a_wave_that_paused_is_trimmed_again_after_its_last_closes() {
        // The tail of 10 is trimmed; 3 closes long after it are left alone.
        assert_eq!(run(&[9000, 0, 10, 0, 0, 3, 0]), vec![1, 3]);
    }

    #[test]
    fn a_few_closes_without_a_wave_are_left_alone() {
        assert_eq!(run(&[3, 0, 5, 0, 100, 0, 0]), Vec::<usize>::new());
    }

    #[test]
    fn nothing_to_trim_when_nothing_closed() {
        assert_eq!(run(&[0, 0, 0]), Vec::<usize>::new());
    }
}
