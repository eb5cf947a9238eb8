//! The bookkeeping of a salvage: which seqs of a damaged log are copied and
//! which are written off, and which DLQ seqs could not be read. Pure: fed
//! what was read, in key order, it says what to write.
//!
//! Invariants of [`LogLedger`]:
//! - every seq from the start to the end it is finished with is decided
//!   exactly once: covered by a copied value (or the copied tail of one), or
//!   by a [`Loss`]; so the new log is a chain;
//! - a value that decodes is never dropped, except the part of it that a
//!   value earlier in key order already covers (reported as a conflict);
//! - a loss carries why: the reason of the unreadable values inside it, or
//!   that no value covers it.

use std::collections::BTreeMap;

use crate::codec::Member;
use crate::types::{Seq, SinkName};

/// Seqs `from..to` that could not be recovered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// First seq.
    pub from: Seq,
    /// One past the last seq.
    pub to: Seq,
    /// What was found there.
    pub reason: String,
}

/// What to write for one value read (or at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these seqs off: a lost marker.
    Lost(Loss),
    /// Copy the value's seqs from `from` on (its seqs below `from` are
    /// already covered).
    Copy {
        /// The first seq to copy.
        from: Seq,
    },
}

/// Follows a damaged log value by value.
#[derive(Debug, Clone)]
pub struct LogLedger {
    /// Every seq below this one is decided, once started.
    next: Seq,
    started: bool,
    /// Where the new log starts: `next` when the first seq was decided.
    start: Option<Seq>,
    /// Why seqs from `next` on are missing, from unreadable values seen
    /// since the last good one.
    pending: Vec<String>,
    /// One past the largest seq an unreadable value's key showed existed.
    seen_end: Seq,
    lost: Vec<Loss>,
    conflicts: Vec<Loss>,
}

impl LogLedger {
    /// A ledger for a log that must start at `start` or lower (the seq
    /// floor, the lowest offset), when that is known.
    pub fn new(start: Option<Seq>) -> LogLedger {
        LogLedger {
            next: start.unwrap_or_default(),
            started: start.is_some(),
            start: None,
            pending: Vec::new(),
            seen_end: Seq(0),
            lost: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    /// The first value read fixes the start when it lies below it (or
    /// when none was known).
    fn begin(&mut self, first: Seq) {
        if !self.started || (self.start.is_none() && first < self.next) {
            self.next = first;
        }
        self.started = true;
    }

    /// Notes that seqs from `next` on are being decided.
    fn decide(&mut self) {
        self.start.get_or_insert(self.next);
    }

    /// Writes off `next..to`, if anything is there.
    fn lose_up_to(&mut self, to: Seq, default_reason: &str) -> Option<Step> {
        let why = if self.pending.is_empty() {
            default_reason.to_string()
        } else {
            std::mem::take(&mut self.pending).join("; ")
        };
        if to <= self.next {
            return None;
        }
        self.decide();
        let loss = Loss {
            from: self.next,
            to,
            reason: why,
        };
        self.lost.push(loss.clone());
        self.next = to;
        Some(Step::Lost(loss))
    }

    /// A value that decoded: `count` seqs from `first`.
    pub fn good(&mut self, first: Seq, count: u32) -> Vec<Step> {
        self.begin(first);
        let end = Seq(first.0 + u64::from(count));
        let mut steps: Vec<Step> = self
            .lose_up_to(first, "no log value covers these seqs")
            .into_iter()
            .collect();
        if end <= self.next {
            self.conflicts.push(Loss {
                from: first,
                to: end,
                reason: format!(
                    "the value at seq {first} claims seqs an earlier value holds; the earlier one was kept"
                ),
            });
            return steps;
        }
        if first < self.next {
            self.conflicts.push(Loss {
                from: first,
                to: self.next,
                reason: format!(
                    "the value at seq {first} claims seqs an earlier value holds; the earlier one was kept, and the rest of this one"
                ),
            });
        }
        self.decide();
        steps.push(Step::Copy {
            from: first.max(self.next),
        });
        self.next = end;
        steps
    }

    /// A value that does not decode. `key` is its first seq when the key
    /// is a seq; `range` its seqs when its header is sound (only the
    /// records are bad). Without a range, the seqs it takes with it end
    /// where the next readable value starts.
    pub fn bad(&mut self, key: Option<Seq>, range: Option<(Seq, Seq)>, reason: &str) -> Vec<Step> {
        let at = key.map_or_else(
            || "a value whose key is not a seq".to_string(),
            |k| format!("the value at seq {k}"),
        );
        let why = format!("{at} cannot be read: {reason}");
        if let Some(k) = key {
            self.begin(k);
            self.seen_end = self.seen_end.max(k.next());
        }
        let Some((from, to)) = range else {
            self.pending.push(why);
            return Vec::new();
        };
        let mut steps: Vec<Step> = self
            .lose_up_to(from, "no log value covers these seqs")
            .into_iter()
            .collect();
        self.pending.push(why);
        steps.extend(self.lose_up_to(to, ""));
        self.pending.clear();
        self.seen_end = self.seen_end.max(to);
        steps
    }

    /// The end: every seq below `end` (or below what the unreadable values
    /// showed existed, if higher) must be covered. `why` says how `end` is
    /// known, for a loss at the tail.
    pub fn finish(&mut self, end: Seq, why: &str) -> Vec<Step> {
        let end = end.max(self.seen_end);
        if !self.started {
            self.next = end;
            self.started = true;
        }
        self.lose_up_to(end, why).into_iter().collect()
    }

    /// Where the new log starts (its first seq), once started.
    pub fn start(&self) -> Option<Seq> {
        self.start.or(self.started.then_some(self.next))
    }

    /// One past the last seq decided.
    pub fn next(&self) -> Seq {
        self.next
    }

    /// Every loss, in seq order.
    pub fn lost(&self) -> &[Loss] {
        &self.lost
    }

    /// Seqs two values claimed; the later value's claim was dropped.
    pub fn conflicts(&self) -> &[Loss] {
        &self.conflicts
    }
}

/// Seqs grouped into ranges per sink, for the DLQ entries that could not
/// be read. Seqs of one sink come in increasing order (the DLQ's key
/// order); consecutive ones merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqRanges {
    by_sink: BTreeMap<String, Vec<(Seq, Seq, String)>>,
}

impl SeqRanges {
    /// Adds one seq of `sink`, lost for `reason` (the first reason of a
    /// range is kept).
    pub fn add(&mut self, sink: &str, seq: Seq, reason: &str) {
        let ranges = self.by_sink.entry(sink.to_string()).or_default();
        match ranges.last_mut() {
            Some(last) if last.1 == seq => last.1 = seq.next(),
            _ => ranges.push((seq, seq.next(), reason.to_string())),
        }
    }

    /// `(sink, from, to, reason)` for every range, by sink then seq.
    pub fn ranges(&self) -> impl Iterator<Item = (&str, Seq, Seq, &str)> + '_ {
        self.by_sink.iter().flat_map(|(sink, rs)| {
            rs.iter()
                .map(move |(from, to, why)| (sink.as_str(), *from, *to, why.as_str()))
        })
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.by_sink.is_empty()
    }

    /// Seqs added.
    pub fn count(&self) -> u64 {
        self.ranges().map(|(_, a, b, _)| b.0 - a.0).sum()
    }
}

/// A sink whose offset could not be read, and where it restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The sink.
    pub sink: SinkName,
    /// Its new offset.
    pub at: Seq,
    /// What was found, and why it restarts there.
    pub why: String,
}

/// Every sink's offset in the copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetPlan {
    /// Offsets read, kept.
    pub kept: Vec<(SinkName, Seq)>,
    /// Offsets lost, and where those sinks restart.
    pub restarted: Vec<Restart>,
}

/// Decides each sink's offset in a copy whose log spans `first..end`.
/// Readable offsets are kept. A sink that is known (a member, an offset
/// whose value is bad, a sink the witness names) but whose offset cannot
/// be read restarts at the witness's offset for it, which is at most what
/// was durable, or else at `first`: nothing readable is skipped, and what
/// it had passed may be delivered again.
pub fn plan_offsets(
    readable: &BTreeMap<SinkName, Seq>,
    unreadable: &[(SinkName, String)],
    members: Option<&[Member]>,
    witness: Option<&BTreeMap<String, u64>>,
    first: Seq,
    end: Seq,
) -> OffsetPlan {
    let clamp = |s: Seq| s.max(first).min(end);
    let mut plan = OffsetPlan {
        kept: readable
            .iter()
            .map(|(n, o)| (n.clone(), clamp(*o)))
            .collect(),
        restarted: Vec::new(),
    };
    let mut lost: Vec<(SinkName, String)> = unreadable
        .iter()
        .map(|(n, why)| (n.clone(), format!("its offset cannot be read: {why}")))
        .collect();
    for m in members.unwrap_or_default() {
        if let Ok(n) = SinkName::new(m.name.clone()) {
            lost.push((n, "its offset is missing, yet it is a member".into()));
        }
    }
    for name in witness.into_iter().flat_map(|w| w.keys()) {
        if let Ok(n) = SinkName::new(name.clone()) {
            lost.push((
                n,
                "its offset is missing, yet the witness file names it".into(),
            ));
        }
    }
    for (sink, found) in lost {
        if readable.contains_key(&sink) || plan.restarted.iter().any(|r| r.sink == sink) {
            continue;
        }
        let (at, how) = match witness.and_then(|w| w.get(sink.as_str())) {
            Some(&o) => (
                clamp(Seq(o)),
                "the witness file's record of it: every seq below was done; those between it and the lost offset may be delivered again",
            ),
            None => (
                first,
                "the first seq in the log: records it had already passed may be delivered again",
            ),
        };
        plan.restarted.push(Restart {
            why: format!("{found}; it restarts at seq {}, {how}", at.0),
            sink,
            at,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(steps: &[Step]) -> Vec<(u64, u64)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Lost(l) => Some((l.from.0, l.to.0)),
                Step::Copy { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_sound_chain_is_copied_whole() {
        let mut l = LogLedger::new(Some(Seq(10)));
        assert_eq!(l.good(Seq(10), 5), vec![Step::Copy { from: Seq(10) }]);
        assert_eq!(l.good(Seq(15), 3), vec![Step::Copy { from: Seq(15) }]);
        assert_eq!(l.finish(Seq(18), "head"), vec![]);
        assert!(l.lost().is_empty() && l.conflicts().is_empty());
        assert_eq!((l.start(), l.next()), (Some(Seq(10)), Seq(18)));
    }

    #[test]
    fn a_missing_value_becomes_one_loss() {
        let mut l = LogLedger::new(Some(Seq(0)));
        l.good(Seq(0), 10);
        let steps = l.good(Seq(20), 5);
        assert_eq!(lost(&steps), vec![(10, 20)]);
        assert_eq!(steps[1], Step::Copy { from: Seq(20) });
        assert_eq!(l.lost()[0].reason, "no log value covers these seqs");
    }

    #[test]
    fn an_unreadable_value_without_a_header_takes_seqs_up_to_the_next_good_one() {
        let mut l = LogLedger::new(Some(Seq(0)));
        l.good(Seq(0), 10);
        assert!(l.bad(Some(Seq(10)), None, "checksum mismatch").is_empty());
        assert!(l.bad(None, None, "key is not a seq").is_empty());
        let steps = l.good(Seq(30), 2);
        assert_eq!(lost(&steps), vec![(10, 30)]);
        assert_eq!(
            l.lost()[0].reason,
            "the value at seq 10 cannot be read: checksum mismatch; a value whose key is not a seq cannot be read: key is not a seq"
        );
    }

    #[test]
    fn an_unreadable_value_with_a_header_is_its_own_loss() {
        let mut l = LogLedger::new(Some(Seq(0)));
        l.good(Seq(0), 10);
        let steps = l.bad(Some(Seq(12)), Some((Seq(12), Seq(20))), "does not decode");
        assert_eq!(lost(&steps), vec![(10, 12), (12, 20)]);
        assert_eq!(l.lost()[0].reason, "no log value covers these seqs");
        assert_eq!(
            l.lost()[1].reason,
            "the value at seq 12 cannot be read: does not decode"
        );
        assert_eq!(l.good(Seq(20), 1), vec![Step::Copy { from: Seq(20) }]);
    }

    #[test]
    fn the_front_and_the_tail_are_bounded_by_what_else_is_known() {
        // Offsets say the log started at 5; the first value left is at 9.
        let mut l = LogLedger::new(Some(Seq(5)));
        assert_eq!(lost(&l.good(Seq(9), 1)), vec![(5, 9)]);
        // The witness says seqs up to 15 were durable.
        let steps = l.finish(Seq(15), "the witness counts seqs up to 15");
        assert_eq!(lost(&steps), vec![(10, 15)]);
        assert_eq!(l.lost()[1].reason, "the witness counts seqs up to 15");
        assert_eq!(l.start(), Some(Seq(5)));
        // A value below the known start moves the start down.
        let mut l = LogLedger::new(Some(Seq(5)));
        assert_eq!(l.good(Seq(3), 4), vec![Step::Copy { from: Seq(3) }]);
        assert_eq!(l.start(), Some(Seq(3)));
    }

    #[test]
    fn an_unreadable_last_value_is_lost_up_to_the_end_or_past_its_key() {
        let mut l = LogLedger::new(None);
        l.good(Seq(0), 4);
        l.bad(Some(Seq(4)), None, "cut short");
        // Nothing else says the log went further: at least seq 4 is lost.
        let steps = l.finish(Seq(4), "head");
        assert_eq!(lost(&steps), vec![(4, 5)]);
        assert!(l.lost()[0].reason.contains("cut short"));
    }

    #[test]
    fn an_empty_log_with_nothing_known_is_empty() {
        let mut l = LogLedger::new(None);
        assert_eq!(l.finish(Seq(7), "floor"), vec![]);
        assert_eq!((l.start(), l.next()), (Some(Seq(7)), Seq(7)));
        let mut l = LogLedger::new(Some(Seq(3)));
        assert_eq!(lost(&l.finish(Seq(7), "witness")), vec![(3, 7)]);
    }

    #[test]
    fn overlaps_keep_the_earlier_value() {
        let mut l = LogLedger::new(Some(Seq(0)));
        l.good(Seq(0), 10);
        assert_eq!(l.good(Seq(5), 3), vec![]);
        assert_eq!(l.good(Seq(8), 4), vec![Step::Copy { from: Seq(10) }]);
        let c: Vec<(u64, u64)> = l.conflicts().iter().map(|c| (c.from.0, c.to.0)).collect();
        assert_eq!(c, vec![(5, 8), (8, 10)]);
        assert!(l.lost().is_empty());
        assert_eq!(l.next(), Seq(12));
    }

    #[test]
    fn dlq_seqs_merge_into_ranges_per_sink() {
        let mut r = SeqRanges::default();
        for s in [3, 4, 5, 9] {
            r.add("a", Seq(s), "bad");
        }
        r.add("b", Seq(1), "other");
        let got: Vec<(&str, u64, u64, &str)> =
            r.ranges().map(|(s, a, b, w)| (s, a.0, b.0, w)).collect();
        assert_eq!(
            got,
            vec![
                ("a", 3, 6, "bad"),
                ("a", 9, 10, "bad"),
                ("b", 1, 2, "other")
            ]
        );
        assert_eq!(r.count(), 5);
    }

    fn n(s: &str) -> SinkName {
        SinkName::new(s).unwrap()
    }

    #[test]
    fn lost_offsets_restart_at_the_witness_or_the_first_seq() {
        let readable: BTreeMap<SinkName, Seq> = [(n("ok"), Seq(40))].into();
        let members = [
            Member {
                name: "ok".into(),
                orphaned_at_ms: None,
            },
            Member {
                name: "gone".into(),
                orphaned_at_ms: None,
            },
        ];
        let witness: BTreeMap<String, u64> =
            [("seen".to_string(), 30), ("ok".to_string(), 35)].into();
        let p = plan_offsets(
            &readable,
            &[(n("bad"), "checksum mismatch".into())],
            Some(&members),
            Some(&witness),
            Seq(10),
            Seq(50),
        );
        assert_eq!(p.kept, vec![(n("ok"), Seq(40))]);
        let got: Vec<(&str, u64)> = p
            .restarted
            .iter()
            .map(|r| (r.sink.as_str(), r.at.0))
            .collect();
        assert_eq!(got, vec![("bad", 10), ("gone", 10), ("seen", 30)]);
        assert!(p.restarted[0].why.starts_with(
            "its offset cannot be read: checksum mismatch; it restarts at seq 10, the first seq"
        ));
        assert!(
            p.restarted[1]
                .why
                .starts_with("its offset is missing, yet it is a member")
        );
        assert!(
            p.restarted[2]
                .why
                .contains("the witness file's record of it")
        );
    }
}
