//! Since when an operation has been in progress, on a monotonic clock: the
//! appender's write to the log, the group commit's flush. Read from other
//! threads to tell an operation that does not return (see
//! `engine/stall.rs`).
//!
//! Invariant: a [`Since`] is entered by one thread or task at a time; its
//! guard clears it however the operation ends.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Milliseconds on a monotonic clock whose zero is the first call in this
/// process: a wall clock stepped by NTP must not make a flush look stuck.
pub(crate) fn monotonic_ms() -> u64 {
    static ZERO: OnceLock<Instant> = OnceLock::new();
    u64::try_from(ZERO.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When the operation in progress started ([`monotonic_ms`] plus one, so
/// that 0 can mean none).
#[derive(Default)]
pub(crate) struct Since(AtomicU64);

impl Since {
    /// Marks an operation as started now, until the guard drops.
    pub fn enter(&self) -> SinceGuard<'_> {
        self.0.store(monotonic_ms() + 1, Ordering::Release);
        SinceGuard(self)
    }

    /// When the operation in progress started ([`monotonic_ms`]), if one is.
    pub fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Acquire).checked_sub(1)
    }
}

/// Clears its [`Since`] when dropped.
pub(crate) struct SinceGuard<'a>(&'a Since);

impl Drop for SinceGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_marks_and_clears() {
        let s = Since::default();
        assert_eq!(s.get(), None);
        let before = monotonic_ms();
        {
            let _g = s.enter();
            let at = s.get().expect("marked while the guard lives");
            assert!(at >= before && at <= monotonic_ms(), "{before} {at}");
        }
        assert_eq!(s.get(), None);
    }
}
