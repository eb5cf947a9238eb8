//! The binary's process-wide allocator settings.
//!
//! They live in the binary, not the library: the allocator belongs to the
//! process, and these change it for every thread and every library in it,
//! not only for outbox, so an embedder decides for itself. The `outbox`
//! binary and the benchmark harness (`benches/compare`, which includes this
//! file) call [`tune_glibc_malloc`] first thing, and the binary calls
//! [`trim_glibc_malloc`] once a second.

/// Raises glibc's mmap threshold to 32 MiB.
///
/// sled allocates one in-memory buffer per log segment (2 MiB, as the
/// store configures it). Above
/// glibc's default threshold each one is a fresh `mmap`, so every byte
/// written first takes a page fault, and is `munmap`ed after; measured at
/// about 130k extra page faults per million records. From the heap the
/// buffers are reused. No-op on other platforms and C libraries.
///
/// # Process-wide
/// This sets glibc's threshold for the whole process, for every allocation
/// of every thread and library, and stays set. Opt in by calling it once,
/// early in `main`, before threads start allocating.
#[allow(unsafe_code)] // mallopt(3): see the SAFETY comment
pub fn tune_glibc_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; glibc serialises it
    // with its own locks and it is valid to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// Hands the free memory inside glibc's arenas back to the kernel
/// (`malloc_trim(0)`). Returns whether any was released.
///
/// With the raised mmap threshold, sled's segment buffers and the many
/// short-lived buffers of the workers come from the arenas of whichever
/// thread allocated them, and glibc returns a thread arena's free pages
/// only from its top. A daemon with ten webhook sinks held 178 MiB free in
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
