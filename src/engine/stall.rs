//! Noticing a write path that stopped moving: the appender inside one write
//! to the log, or the group commit inside one flush, for longer than a
//! limit.
//!
//! Neither ever waits on anything but the disk and sled, and each finishes
//! in milliseconds on a healthy one, so either lasting tens of seconds
//! means the process is wedged: a disk that no longer answers, or sled
//! waiting on itself (docs/performance.md, "A hang on the branch").
//! Nothing accepted is at risk then, but nothing moves either, and from
//! outside it looks like an idle daemon. `store::Since` records when each
//! operation started, on a monotonic clock; [`verdict`] is the pure
//! decision.

use std::time::Duration;

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
    fn a_start_read_after_now_is_not_a_stall() {
        assert_eq!(
            verdict(1_000, Some(5_000), Some(5_000), Duration::from_millis(1)),
            None
        );
    }
}
