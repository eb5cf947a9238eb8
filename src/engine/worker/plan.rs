//! The worker's plan, as plain decisions: how much may start, what to do
//! with the record at the next position, what a Drop floor skips, and when
//! the worker may return. Pure: the worker reads its state, asks, and acts
//! (delivers, passes over, commits, logs).
//!
//! Invariants:
//! - a record starts only with a delivery slot free, below the head, and
//!   fewer than `window` seqs past the committed offset;
//! - only a hole, a lost marker, a seq a value does not hold, a record
//!   aimed at another sink and one the sink's filter rejects are passed
//!   over; every other record is delivered;
//! - a worker returns on a drain only once nothing is in flight, running,
//!   dead-lettered or finished past its committed offset, and the head is reached.

use crate::codec::BatchKind;
use crate::config::SinkConfig;
use crate::engine::breaker::BreakerState;
use crate::filter::Filter;
use crate::store::Batch;
use crate::types::Seq;

/// How many deliveries may run, and how far ahead of its committed offset
/// the worker may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Room {
    /// Deliveries in flight at most (1 under `ordering = strict`).
    pub in_flight: usize,
    /// Seqs started beyond the committed offset at most: two batches'
    /// worth, and never fewer than `in_flight`.
    pub window: u64,
}

impl Room {
    pub fn of(cfg: &SinkConfig) -> Room {
        Room {
            in_flight: cfg.in_flight().max(1),
            window: (cfg.batch_max as u64)
                .saturating_mul(2)
                .max(cfg.in_flight() as u64),
        }
    }

    /// Whether the record at `next` may start, with `in_flight` deliveries
    /// running, the head at `head` and the offset at `committed`.
    pub fn admits(&self, in_flight: usize, next: Seq, head: Seq, committed: Seq) -> bool {
        in_flight < self.in_flight
            && next < head
            && next.0.saturating_sub(committed.0) < self.window
    }
}

/// What the worker does at position `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Pass over everything below `to`: a hole, a lost marker (`lost`,
    /// which is said aloud), or seqs the value does not hold.
    Pass { to: Seq, lost: bool },
    /// A redriven record aimed at another sink: pass over this seq.
    OtherSink,
    /// The sink's filter rejects it: pass over this seq, counted.
    Filtered,
    /// Deliver it.
    Deliver,
}

/// The step at `pos` in `batch` (the value covering it), for the sink
/// `sink` with `filter`, the head at `head`.
pub(super) fn step(
    batch: &Batch,
    pos: Seq,
    head: Seq,
    sink: &str,
    filter: Option<&Filter>,
) -> Step {
    if batch.header.kind != BatchKind::Records {
        return Step::Pass {
            to: batch.end().min(head),
            lost: batch.header.kind == BatchKind::Lost,
        };
    }
    let Some(entry) = batch.entry(pos) else {
        return Step::Pass {
            to: batch.end().min(head),
            lost: false,
        };
    };
    if entry.target.as_deref().is_some_and(|t| t != sink) {
        return Step::OtherSink;
    }
    if filter.is_some_and(|f| !f.matches(&entry.record)) {
        return Step::Filtered;
    }
    Step::Deliver
}

/// Whether a new record may start through the breaker: closed, or open
/// with nothing in flight (`idle`: the record started waits at the gate
/// for the probe, and is the probe). Paused by an operator: nothing starts.
/// The token bucket is passed by each attempt itself.
pub(super) fn gate_open(state: BreakerState, idle: bool) -> bool {
    match state {
        BreakerState::Closed => true,
        BreakerState::Paused => false,
        _ => idle,
    }
}

/// How many seqs a Drop floor at `floor` skips for a worker whose window
/// is done below `done`; `None` when the floor is not above it.
pub(super) fn drop_skip(floor: Seq, done: Seq) -> Option<u64> {
    (floor > done).then(|| floor.0 - done.0)
}

/// Where the worker stands, for deciding whether it may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Progress {
    /// No delivery in flight.
    pub idle: bool,
    /// A sink commit is running.
    pub committing: bool,
    /// The next seq to start.
    pub next: Seq,
    /// The window's contiguous watermark.
    pub done: Seq,
    /// The offset last committed.
    pub committed: Seq,
    /// The published head.
    pub head: Seq,
    /// Records dead-lettered and not yet committed.
    pub dead_lettered: bool,
}

impl Progress {
    /// Nothing in flight and everything finished is committed: a worker
    /// stopping on damaged data may return.
    pub fn settled(&self) -> bool {
        self.idle && !self.committing && self.done == self.committed
    }

    /// Settled, with nothing dead-lettered and every published record started: a
    /// draining worker may return.
    pub fn caught_up(&self) -> bool {
        self.settled() && self.next >= self.head && !self.dead_lettered
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::{BatchHeader, LogEntry};
    use crate::config::Ordering;
    use crate::filter::FilterSpec;
    use crate::types::Record;

    fn records(first: u64, entries: Vec<LogEntry>) -> Arc<Batch> {
        Arc::new(Batch {
            first: Seq(first),
            header: BatchHeader::records(&entries, 0),
            entries,
        })
    }

    fn marker(first: u64, count: u32, kind: BatchKind) -> Batch {
        Batch {
            first: Seq(first),
            header: BatchHeader {
                kind,
                count,
                bytes: 0,
                appended_at_ms: 0,
            },
            entries: Vec::new(),
        }
    }

    fn entry(payload: &[u8], target: Option<&str>) -> LogEntry {
        let mut e = LogEntry::new(Record::new(payload.to_vec()));
        e.target = target.map(str::to_string);
        e
    }

    #[test]
    fn room_comes_from_the_ordering_and_batch_max() {
        let strict = SinkConfig {
            ordering: Ordering::Strict,
            batch_max: 512,
            ..SinkConfig::default()
        };
        assert_eq!(
            Room::of(&strict),
            Room {
                in_flight: 1,
                window: 1024
            }
        );
        let wide = SinkConfig {
            ordering: Ordering::Unordered,
            max_in_flight: Some(64),
            batch_max: 16,
            ..SinkConfig::default()
        };
        assert_eq!(
            Room::of(&wide),
            Room {
                in_flight: 64,
                window: 64
            }
        );
    }

    #[test]
    fn room_admits_below_the_head_within_the_slots_and_the_window() {
        let room = Room {
            in_flight: 2,
            window: 10,
        };
        assert!(room.admits(1, Seq(5), Seq(6), Seq(0)));
        assert!(!room.admits(2, Seq(5), Seq(6), Seq(0)), "no slot free");
        assert!(!room.admits(0, Seq(6), Seq(6), Seq(0)), "at the head");
        assert!(room.admits(0, Seq(9), Seq(100), Seq(0)));
        assert!(!room.admits(0, Seq(10), Seq(100), Seq(0)), "window full");
        assert!(room.admits(0, Seq(10), Seq(100), Seq(1)));
    }

    #[test]
    fn holes_and_lost_markers_pass_to_their_end_or_the_head() {
        let hole = marker(10, 5, BatchKind::Hole);
        assert_eq!(
            step(&hole, Seq(10), Seq(100), "a", None),
            Step::Pass {
                to: Seq(15),
                lost: false
            }
        );
        let lost = marker(10, 5, BatchKind::Lost);
        assert_eq!(
            step(&lost, Seq(12), Seq(13), "a", None),
            Step::Pass {
                to: Seq(13),
                lost: true
            }
        );
    }

    #[test]
    fn records_are_delivered_unless_aimed_elsewhere_or_filtered() {
        let b = records(
            20,
            vec![
                entry(b"{}", None),
                entry(b"{}", Some("b")),
                entry(b"{}", Some("a")),
            ],
        );
        assert_eq!(step(&b, Seq(20), Seq(23), "a", None), Step::Deliver);
        assert_eq!(step(&b, Seq(21), Seq(23), "a", None), Step::OtherSink);
        assert_eq!(step(&b, Seq(22), Seq(23), "a", None), Step::Deliver);
        assert_eq!(step(&b, Seq(21), Seq(23), "b", None), Step::Deliver);
        // A seq the value does not hold: passed to its end.
        assert_eq!(
            step(&b, Seq(19), Seq(30), "a", None),
            Step::Pass {
                to: Seq(23),
                lost: false
            }
        );
    }

    #[test]
    fn the_filter_passes_over_what_it_rejects() {
        let spec: FilterSpec =
            serde_json::from_str(r#"{"json": {"/level": ["error"]}}"#).expect("spec");
        let f = Filter::new(&spec, "sinks.a.filter").expect("filter");
        let b = records(
            0,
            vec![
                entry(br#"{"level":"error"}"#, None),
                entry(br#"{"level":"info"}"#, None),
            ],
        );
        assert_eq!(step(&b, Seq(0), Seq(2), "a", Some(&f)), Step::Deliver);
        assert_eq!(step(&b, Seq(1), Seq(2), "a", Some(&f)), Step::Filtered);
        // Aimed at another sink decides before the filter is asked.
        let other = records(5, vec![entry(br#"{"level":"info"}"#, Some("b"))]);
        assert_eq!(step(&other, Seq(5), Seq(6), "a", Some(&f)), Step::OtherSink);
    }

    #[test]
    fn the_breaker_gate() {
        assert!(gate_open(BreakerState::Closed, false));
        assert!(!gate_open(BreakerState::Paused, true));
        assert!(gate_open(BreakerState::Open, true));
        assert!(!gate_open(BreakerState::Open, false));
        assert!(gate_open(BreakerState::HalfOpen, true));
        assert!(!gate_open(BreakerState::HalfOpen, false));
    }

    #[test]
    fn a_drop_floor_skips_only_above_the_watermark() {
        assert_eq!(drop_skip(Seq(50), Seq(20)), Some(30));
        assert_eq!(drop_skip(Seq(20), Seq(20)), None);
        assert_eq!(drop_skip(Seq(10), Seq(20)), None);
    }

    #[test]
    fn a_worker_returns_only_when_settled_and_caught_up() {
        let done = Progress {
            idle: true,
            committing: false,
            next: Seq(10),
            done: Seq(10),
            committed: Seq(10),
            head: Seq(10),
            dead_lettered: false,
        };
        assert!(done.settled() && done.caught_up());
        let behind = Progress {
            next: Seq(9),
            ..done
        };
        assert!(behind.settled() && !behind.caught_up());
        let dead_lettered = Progress {
            dead_lettered: true,
            ..done
        };
        assert!(dead_lettered.settled() && !dead_lettered.caught_up());
        for busy in [
            Progress {
                idle: false,
                ..done
            },
            Progress {
                committing: true,
                ..done
            },
            Progress {
                committed: Seq(8),
                ..done
            },
        ] {
            assert!(!busy.settled() && !busy.caught_up(), "{busy:?}");
        }
    }
}
