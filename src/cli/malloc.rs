//! The binary's process-wide allocator: the system allocator, with a small
//! cache of sled's log-segment buffers, and a periodic trim.
//!
//! They live in the binary, not the library: the allocator belongs to the
//! process, and these change it for every thread and every library in it,
//! not only for outbox, so an embedder decides for itself. The `outbox`
//! binary and the benchmark harness (`benches/compare`, which includes this
//! file) install [`Alloc`] as the global allocator, and the binary calls
//! [`trim_glibc_malloc`] once a second.
//!
//! Why: sled allocates a fresh in-memory buffer for every log segment it
//! starts (2 MiB, 8 KiB aligned, as the store configures it), and under the
//! `full` policy it starts one per flush: about 2,500 buffers, 5 GB of
//! allocation, per million records. As glibc `mmap`s them, every byte
//! written first takes a page fault; raising glibc's mmap threshold to
//! 32 MiB (what the binary did before) served them from the heap instead,
//! where they fragment the arenas: building a 1M-record backlog peaked at
//! 270-288 MiB RSS with 142 MiB in use. [`Alloc`] keeps up to [`CACHED`]
//! freed segment buffers, already faulted in, for sled's next allocation
//! of the same layout, and leaves glibc's defaults alone. Measured
//! (`compare --only outbox_1sink_full` and `--only rss`, 2026-12-05):
//! 85-104k page faults per million records became 17-20k, CPU time 2.17 s
//! became 1.99-2.14 s, and the peak building the backlog 270 MiB became
//! 141-144 MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// sled's alignment for its segment buffers (`AlignedBuf` in sled 0.34's
/// `pagecache/iobuf.rs`). Nothing else in the process asks for it with a
/// size of [`MIN_CACHED`] or more.
const SEGMENT_ALIGN: usize = 8192;

/// The smallest allocation [`Alloc`] caches.
const MIN_CACHED: usize = 256 << 10;

/// Freed segment buffers kept for reuse. sled keeps sealed segments alive
/// until their writes are stable, so under group commit many are freed
/// close together: of about 2,500 allocations per million records under
/// `full`, a cache of 4 missed 309 (each a fresh `mmap` and 512 page
/// faults), 8 missed 210, 16 missed 39. At most 32 MiB is held, and only
/// after that many buffers were live at once.
const CACHED: usize = 16;

/// Cached buffers: address and size. Empty slots are `(0, 0)`.
static SLOTS: Mutex<[(usize, usize); CACHED]> = Mutex::new([(0, 0); CACHED]);

/// The system allocator, plus a cache of [`CACHED`] segment buffers.
///
/// # Process-wide
/// Installed with `#[global_allocator]`, it serves every allocation of the
/// process. It allocates nothing itself and takes one uncontended lock on
/// the (rare) allocations it caches.
pub struct Alloc;

fn cacheable(layout: &Layout) -> bool {
    layout.align() == SEGMENT_ALIGN && layout.size() >= MIN_CACHED
}

#[allow(unsafe_code)] // GlobalAlloc is an unsafe trait: see the SAFETY comments
// SAFETY: every block handed out comes from `System` with the caller's
// layout: either directly, or a cached block that `System` allocated with
// the same size and alignment and that its owner freed (so nothing else
// refers to it). A block is in at most one slot, and leaves the slot
// before it is handed out.
unsafe impl GlobalAlloc for Alloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cacheable(&layout)
            && let Ok(mut slots) = SLOTS.lock()
            && let Some(slot) = slots.iter_mut().find(|s| s.1 == layout.size())
        {
            let ptr = slot.0 as *mut u8;
            *slot = (0, 0);
            return ptr;
        }
        // SAFETY: the caller's contract for `layout` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if cacheable(&layout)
            && let Ok(mut slots) = SLOTS.lock()
            && let Some(slot) = slots.iter_mut().find(|s| s.1 == 0)
        {
            *slot = (ptr as usize, layout.size());
            return;
        }
        // SAFETY: `ptr` was allocated by `System` with `layout` (see above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cacheable(&layout) {
            // SAFETY: as `alloc`; a cached block is not zeroed, so zero it.
            let ptr = unsafe { self.alloc(layout) };
            if !ptr.is_null() {
                // SAFETY: `ptr` is valid for `layout.size()` bytes.
                unsafe { ptr.write_bytes(0, layout.size()) };
            }
            return ptr;
        }
        // SAFETY: the caller's contract for `layout` is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if cacheable(&layout) {
            // A cached layout is never grown in place: copy.
            // SAFETY: `layout` with `new_size` is valid per the caller.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: as `alloc`.
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: both blocks are valid for the smaller size, and distinct.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            return new;
        }
        // SAFETY: the caller's contract is passed on; `ptr` is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Hands the free memory inside glibc's arenas back to the kernel
/// (`malloc_trim(0)`). Returns whether any was released.
///
/// The many short-lived buffers of the workers come from the arenas of
/// whichever thread allocated them, and glibc returns a thread arena's free
/// pages only from its top. A daemon with ten webhook sinks held 178 MiB free in
/// two arenas out of 300 MiB (`malloc_info`, docs/performance.md); calling
/// this every second keeps that down. No-op (false) on other platforms and
/// C libraries.
///
/// # Process-wide
/// This trims every arena of the process, whoever allocated in it, and
/// takes each arena's lock while it runs: call it from a blocking thread,
/// not from an async task.
#[allow(unsafe_code)] // malloc_trim(3): see the SAFETY comment
pub fn trim_glibc_malloc() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes glibc's arena locks itself and only returns
    // free pages; it is valid to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    #[allow(unsafe_code)] // exercises the allocator through its unsafe trait
    #[test]
    fn a_freed_segment_buffer_is_handed_back_and_zeroed_when_asked() {
        use super::*;
        // A size sled never asks for, so no other thread's buffers share
        // its slots while this runs.
        const SIZE: usize = MIN_CACHED + 3 * SEGMENT_ALIGN;
        let layout = Layout::from_size_align(SIZE, SEGMENT_ALIGN).unwrap();
        // SAFETY: every block is used within its layout and freed once,
        // with the layout it was allocated with.
        unsafe {
            let a = Alloc.alloc(layout);
            assert!(!a.is_null());
            assert_eq!(a as usize % SEGMENT_ALIGN, 0);
            a.write_bytes(0xab, SIZE);
            Alloc.dealloc(a, layout);
            // The cached block comes back for the same layout...
            let b = Alloc.alloc(layout);
            assert_eq!(b, a, "the freed buffer is reused");
            Alloc.dealloc(b, layout);
            // ...zeroed when zeroed memory is asked for.
            let z = Alloc.alloc_zeroed(layout);
            assert_eq!(z, a);
            assert!(std::slice::from_raw_parts(z, SIZE).iter().all(|&x| x == 0));
            // A realloc keeps the contents, whichever way it goes.
            z.write_bytes(7, SIZE);
            let bigger = Alloc.realloc(z, layout, SIZE * 2);
            assert!(
                std::slice::from_raw_parts(bigger, SIZE)
                    .iter()
                    .all(|&x| x == 7)
            );
            let bigger_layout = Layout::from_size_align(SIZE * 2, SEGMENT_ALIGN).unwrap();
            Alloc.dealloc(bigger, bigger_layout);
            // Another alignment is not cached: it goes to the system.
            let other = Layout::from_size_align(SIZE, 16).unwrap();
            let c = Alloc.alloc(other);
            assert!(!c.is_null());
            Alloc.dealloc(c, other);
        }
    }
}
