//! Backpressure, as plain decisions: whether a `Block` sink is full, and
//! where a `Drop` sink's floor must move. Pure: the caller reads the lag
//! from the shared core and applies the decision (dispatch waits, or the
//! floor is committed).
//!
//! Invariants:
//! - a sink is full once its lag in records reaches `max_lag_records`, or,
//!   with at least one record pending, its lag in bytes reaches
//!   `max_lag_bytes`; with no limit it is never full;
//! - a Drop floor is the highest of the seqs each limit allows, and is
//!   returned only when it is above what the sink has already passed, so a
//!   floor never moves back.

use crate::config::SinkConfig;
use crate::types::Seq;

/// A sink's lag limits, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LagLimit {
    /// `max_lag_records`.
    pub records: Option<u64>,
    /// `max_lag_bytes`.
    pub bytes: Option<u64>,
}

impl LagLimit {
    pub fn of(cfg: &SinkConfig) -> LagLimit {
        LagLimit {
            records: cfg.max_lag_records,
            bytes: cfg.max_lag_bytes,
        }
    }

    /// Whether a sink `lag` records behind is at its limit. `lag_bytes`
    /// gives its lag in bytes (`None` when bytes are not tracked); it is
    /// asked only when the records do not decide and a record is pending,
    /// because finding it takes a lock.
    pub fn is_full(&self, lag: u64, lag_bytes: impl FnOnce() -> Option<u64>) -> bool {
        if self.records.is_some_and(|m| lag >= m) {
            return true;
        }
        match self.bytes {
            Some(m) => lag > 0 && lag_bytes().is_some_and(|b| b >= m),
            None => false,
        }
    }

    /// Where a Drop sink that has passed `passed` must move to: for a
    /// limit of `n` records, `records_back(n)` (the seq `n` records below
    /// the head); for `n` bytes, `bytes_back(n)` (the first seq from which
    /// at most `n` bytes remain, `None` when bytes are not tracked). `None`
    /// when the sink is within its limits.
    pub fn drop_floor(
        &self,
        passed: Seq,
        records_back: impl FnOnce(u64) -> Seq,
        bytes_back: impl FnOnce(u64) -> Option<Seq>,
    ) -> Option<Seq> {
        let mut floor = 0u64;
        if let Some(m) = self.records {
            floor = floor.max(records_back(m).0);
        }
        if let Some(f) = self.bytes.and_then(bytes_back) {
            floor = floor.max(f.0);
        }
        (floor > passed.0).then_some(Seq(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::holes::Holes;
    use crate::engine::tail::ByteIndex;

    fn limit(records: Option<u64>, bytes: Option<u64>) -> LagLimit {
        LagLimit { records, bytes }
    }

    #[test]
    fn the_limits_come_from_the_sink_config() {
        let cfg = SinkConfig {
            max_lag_records: Some(7),
            max_lag_bytes: Some(900),
            ..SinkConfig::default()
        };
        assert_eq!(LagLimit::of(&cfg), limit(Some(7), Some(900)));
        assert_eq!(
            LagLimit::of(&SinkConfig::default()),
            limit(Some(1_000_000), None)
        );
    }

    #[test]
    fn full_at_the_record_limit_not_below() {
        let l = limit(Some(10), None);
        assert!(!l.is_full(9, || unreachable!("no byte limit")));
        assert!(l.is_full(10, || unreachable!("no byte limit")));
        assert!(l.is_full(11, || unreachable!("no byte limit")));
        assert!(!limit(None, None).is_full(u64::MAX, || Some(u64::MAX)));
    }

    #[test]
    fn full_at_the_byte_limit_only_with_a_record_pending() {
        let l = limit(None, Some(1000));
        assert!(!l.is_full(3, || Some(999)));
        assert!(l.is_full(3, || Some(1000)));
        // Nothing pending: bytes before the offset are not lag, and the
        // index is not even asked.
        assert!(!l.is_full(0, || unreachable!("asked with no lag")));
        // Bytes not tracked: only the record limit can decide.
        assert!(!l.is_full(3, || None));
    }

    #[test]
    fn the_record_limit_decides_before_the_bytes_are_asked() {
        let l = limit(Some(5), Some(1000));
        assert!(l.is_full(5, || unreachable!("records decided")));
        assert!(!l.is_full(4, || Some(10)));
        assert!(l.is_full(4, || Some(2000)));
    }

    #[test]
    fn the_drop_floor_is_the_highest_limit_and_only_moves_up() {
        let l = limit(Some(10), Some(500));
        // 10 records below a head of 100 is 90; the bytes allow from 95.
        let floor = |passed| l.drop_floor(Seq(passed), |n| Seq(100 - n), |_| Some(Seq(95)));
        assert_eq!(floor(0), Some(Seq(95)));
        assert_eq!(floor(94), Some(Seq(95)));
        assert_eq!(floor(95), None);
        assert_eq!(floor(99), None);
        let by_records = l.drop_floor(Seq(0), |n| Seq(100 - n), |_| Some(Seq(40)));
        assert_eq!(by_records, Some(Seq(90)));
        // Bytes not tracked: the records alone.
        assert_eq!(
            l.drop_floor(Seq(0), |n| Seq(100 - n), |_| None),
            Some(Seq(90))
        );
        assert_eq!(
            limit(None, None).drop_floor(Seq(0), |_| Seq(100), |_| Some(Seq(100))),
            None
        );
    }

    #[test]
    fn the_drop_floor_counts_records_not_holes() {
        // Seqs 80..90 are a hole: 10 records below a head of 100 reach
        // back to 80, past the hole, not to 90.
        let mut holes = Holes::default();
        holes.add(Seq(80), Seq(90));
        let l = limit(Some(10), None);
        let floor = l.drop_floor(Seq(0), |n| holes.back(Seq(100), n), |_| None);
        assert_eq!(floor, Some(Seq(80)));
    }

    #[test]
    fn the_drop_floor_by_bytes_is_the_start_of_the_oldest_batch_that_fits() {
        let mut idx = ByteIndex::default();
        idx.push(Seq(0), 300);
        idx.push(Seq(10), 300);
        idx.push(Seq(20), 300);
        let l = limit(None, Some(600));
        let floor = l.drop_floor(Seq(0), |_| unreachable!(), |n| idx.floor_for(n));
        assert_eq!(floor, Some(Seq(10)));
        assert!(l.is_full(30, || Some(idx.bytes_from(Seq(0)))));
        assert!(!l.is_full(10, || Some(idx.bytes_from(Seq(20)))));
    }
}
