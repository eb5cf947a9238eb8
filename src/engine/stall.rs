//! Noticing a write path that stopped moving: the appender inside one write
//! to the log, or the group commit inside one flush, for longer than a
//! limit.
//!
//! Neither ever waits on anything but the disk and sled, and each finishes
//! in milliseconds on a healthy one, so either lasting tens of seconds
//! means the process is wedged: a disk that no longer answers, or sled
//! waiting on itself (docs/performance.md, "A hang on the branch").
//! Nothing accepted is at risk then, but nothing moves either, and from
//! outside it looks like an idle daemon. [`Since`] records when the current
//! operation started; [`verdict`] is the pure decision.
//!
//! Invariant: a [`Since`] is entered by one task at a time (the appender is
//! one task); a guard clears it however the operation ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::now_ms;

/// When the operation in progress started, ms since the Unix epoch; 0 when
/// none is.
#[derive(Default)]
pub(crate) struct Since(AtomicU64);

impl Since {
    /// Marks an operation as started now, until the guard drops.
    pub fn enter(&self) -> SinceGuard<'_> {
        self.0.store(now_ms().max(1), Ordering::Release);
        SinceGuard(self)
    }

    /// When the operation in progress started, if one is.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire)).filter(|&t| t != 0)
    }
}

/// Clears its [`Since`] when dropped.
pub(crate) struct SinceGuard<'a>(&'a Since);

impl Drop for SinceGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.store(0, Ordering::Release);
    }
}

/// What is stalled at `now_ms`, given when the appender's write and the
/// group commit's flush in progress started: a sentence naming each that
/// has lasted at least `limit`, or `None`.
pub(crate) fn verdict(
    now_ms: u64,
    appending_since: Option<u64>,
    flushing_since: Option<u64>,
    limit: Duration,
) -> Option<String> {
    let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let over = |since: Option<u64>| {
        since
            .map(|t| now_ms.saturating_sub(t))
            .filter(|&d| d >= limit)
    };
    let secs = |ms: u64| ms as f64 / 1000.0;
    let mut parts = Vec::new();
    if let Some(d) = over(appending_since) {
        parts.push(format!(
            "the appender has been in one write to the log for {:.1} s",
            secs(d)
        ));
    }
    if let Some(d) = over(flushing_since) {
        parts.push(format!(
            "the group commit's flush has been running for {:.1} s",
            secs(d)
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "{}: the store is not answering; nothing accepted is lost, and a restart replays it",
            parts.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S30: Duration = Duration::from_secs(30);

    #[test]
    fn nothing_in_progress_is_never_stalled() {
        assert_eq!(verdict(1_000_000, None, None, S30), None);
        assert_eq!(verdict(1_000_000, None, None, Duration::ZERO), None);
    }

    #[test]
    fn an_operation_is_stalled_from_the_limit_on() {
        let start = 1_000_000;
        assert_eq!(verdict(start + 29_999, Some(start), None, S30), None);
        let v = verdict(start + 30_000, Some(start), None, S30).unwrap();
        assert!(
            v.starts_with("the appender has been in one write to the log for 30.0 s:"),
            "{v}"
        );
        let v = verdict(start + 45_500, None, Some(start), S30).unwrap();
        assert!(
            v.starts_with("the group commit's flush has been running for 45.5 s:"),
            "{v}"
        );
    }

    #[test]
    fn both_are_named_when_both_are_stalled() {
        let v = verdict(100_000, Some(10_000), Some(50_000), S30).unwrap();
        assert!(
            v.contains("log for 90.0 s; the group commit's flush has been running for 50.0 s"),
            "{v}"
        );
        // Only the one over the limit is named.
        let v = verdict(100_000, Some(10_000), Some(90_000), S30).unwrap();
        assert!(!v.contains("flush"), "{v}");
    }

    #[test]
    fn a_clock_that_went_back_is_not_a_stall() {
        assert_eq!(
            verdict(1_000, Some(5_000), Some(5_000), Duration::from_millis(1)),
            None
        );
    }

    #[test]
    fn a_guard_clears_its_mark() {
        let s = Since::default();
        assert_eq!(s.get(), None);
        {
            let _g = s.enter();
            assert!(s.get().is_some());
        }
        assert_eq!(s.get(), None);
    }
}
