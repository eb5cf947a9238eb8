//! Process-wide settings an embedder may apply at startup.
//!
//! These are not applied by the library itself: the allocator belongs to
//! the process. The `outbox` binary and the benchmark harness call
//! [`tune_glibc_malloc`] first thing.

/// Raises glibc's mmap threshold to 32 MiB.
///
/// sled allocates one in-memory buffer per log segment (4 MiB). Above
/// glibc's default threshold each one is a fresh `mmap`, so every byte
/// written first takes a page fault, and is `munmap`ed after; measured at
/// about 130k extra page faults per million records. From the heap the
/// buffers are reused. No-op on other platforms and C libraries.
pub fn tune_glibc_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; glibc serialises it
    // with its own locks and it is valid to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}
