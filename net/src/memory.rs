//! Giving freed memory back to the system.
//!
//! A connection storm grows the heap; when those connections close, the allocator keeps the
//! freed memory for reuse, scattered through the heap, so the process's RSS stays at its peak
//! (measured: 9 MB idle, 40 MB after 10,000 connections came and went). glibc's
//! `malloc_trim(0)` returns every free page, in every arena, to the kernel; each shard's sweep
//! calls it after a wave of closes (docs/ARCHITECTURE.md, "What a connection costs"). The hot
//! path never calls it.

/// Returns free heap pages to the system; `false` where the C library has no such call
/// (anything but glibc) or nothing was returned.
pub(crate) fn give_back() -> bool {
    trim()
}

/// The crate's one `unsafe`: a foreign call with no arguments to check.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    extern "C" {
        // glibc, <malloc.h>: int malloc_trim(size_t pad).
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: malloc_trim takes no pointers; it locks each arena while it walks it.
    unsafe { malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
