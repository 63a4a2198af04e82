//! The agent's global allocator: mimalloc, called the way its C API is fastest.
//!
//! The `mimalloc` crate's `GlobalAlloc` asks for every block with `mi_malloc_aligned`, whose
//! path (mimalloc v3) costs about 110 instructions per call against about 70 for `mi_malloc`
//! (callgrind, the `decode_process` bench). Nearly every allocation of the agent asks for an
//! alignment of 8 or less, which every mimalloc block already has (block sizes are whole
//! words, from word-aligned pages), so those go to the plain calls; a larger alignment takes
//! the aligned ones.
//!
//! Why mimalloc at all: payloads are decoded into many short-lived allocations and freed
//! together; the system allocator returns that memory to the OS and page-faults it back on
//! the next payload.

#![allow(unsafe_code)] // the one place: a `GlobalAlloc` over mimalloc's C API (SAFETY notes below)

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has (a machine word).
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator] static A: Allocator = Allocator;`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

// SAFETY: every method hands the layout's size to mimalloc and, when the layout asks for more
// than word alignment, its alignment too; blocks are freed and resized only by mimalloc.
// mimalloc returns null on failure, as `GlobalAlloc` requires.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C calls; the result is word-aligned, or aligned as asked.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`, zeroed.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the `GlobalAlloc` contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps its
        // alignment (word, or the aligned call's).
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`, v3): how long freed memory stays
/// committed before it is returned to the OS, in milliseconds (default 1000).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// How long the agent lets mimalloc keep freed memory: a payload's buffers (its body, decoded
/// spans, protobuf and compressed bytes; 20–40 MiB for a 1000-trace v0.4 payload) are freed
/// within milliseconds of each other, and with mimalloc's default of one second the memory of
/// the last few payloads stayed resident (Datadog mode at 50 k spans/s: 60–64 MiB peak RSS,
/// 54–56 MiB at 100 ms; `scripts/load.sh`).
pub const PURGE_DELAY_MS: std::ffi::c_long = 100;

// The option calls are in the C library the `libmimalloc-sys` crate builds (its `extended`
// feature declares them; not enabled here).
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` is set in
/// the environment (which mimalloc reads itself). Call once at startup, before other threads.
pub fn limit_retention() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain C call with a valid option number; mimalloc documents it as not
        // thread safe, and it runs before the agent starts its threads.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mimalloc's current purge delay, in milliseconds.
    fn purge_delay_ms() -> std::ffi::c_long {
        // SAFETY: a plain C call with a valid option number.
        unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn the_purge_delay_is_set_unless_the_environment_sets_it() {
        let from_env = std::env::var("MIMALLOC_PURGE_DELAY").ok();
        match from_env.and_then(|v| v.parse::<std::ffi::c_long>().ok()) {
            None => {
                // Option 15 holds mimalloc's purge-delay default before it is set (only this
                // test sets it): the option number is the right one.
                assert_eq!(purge_delay_ms(), 1000, "mimalloc's default purge delay");
                limit_retention();
                assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
            }
            Some(v) => {
                limit_retention();
                assert_eq!(purge_delay_ms(), v);
            }
        }
    }

    /// Every size and alignment the collections ask for comes back aligned, writable, and
    /// keeps its bytes across a resize.
    #[test]
    fn blocks_are_aligned_and_resizable() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 7, 8, 15, 24, 40, 100, 1000, 5000, 100_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero layout; the block is written within its size, resized
                // with the same layout and freed once.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "resized, size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xab));
                    a.dealloc(q, Layout::from_size_align_unchecked(size * 3, align));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
