//! The seq ranges in the log that hold no record (holes left by a crash,
//! lost markers written by salvage), so that a sink's lag counts records,
//! not seqs. Pure: no I/O.
//!
//! A restart after a crash skips up to a reservation chunk of seqs (a
//! million): counted as lag, that would block dispatch (`on_full = block`)
//! or make a Drop sink skip real records. Lag is therefore `head - offset`
//! less the marker seqs in between.
//!
//! Invariants: ranges are sorted and disjoint; `count_in` and `back` agree
//! with a walk seq by seq (see the tests).

use crate::types::Seq;

/// Sorted, disjoint `[from, to)` ranges of seqs with no record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holes {
    ranges: Vec<(u64, u64)>,
}

impl Holes {
    /// Adds a range. Ranges come in seq order (they are found walking the
    /// log, then written at the head); an overlapping one is merged.
    pub fn add(&mut self, from: Seq, to: Seq) {
        if from >= to {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if from.0 <= last.1 => last.1 = last.1.max(to.0),
            _ => self.ranges.push((from.0, to.0)),
        }
    }

    /// Seqs with no record in `[from, to)`.
    pub fn count_in(&self, from: Seq, to: Seq) -> u64 {
        self.ranges
            .iter()
            .map(|&(a, b)| b.min(to.0).saturating_sub(a.max(from.0)))
            .sum()
    }

    /// Records between `from` and `to`: the seqs less the holes.
    pub fn records(&self, from: Seq, to: Seq) -> u64 {
        to.0.saturating_sub(from.0) - self.count_in(from, to)
    }

    /// The lowest seq `s` with at most `n` records in `[s, head)`: where a
    /// Drop sink limited to `n` records must be.
    pub fn back(&self, head: Seq, n: u64) -> Seq {
        let mut pos = head.0;
        let mut left = n;
        for &(a, b) in self.ranges.iter().rev() {
            if a >= pos {
                continue;
            }
            let gap = pos - b.min(pos);
            if gap > left {
                return Seq(pos - left);
            }
            left -= gap;
            pos = a;
        }
        Seq(pos.saturating_sub(left))
    }

    /// Forgets ranges that end at or below `seq`.
    pub fn drop_below(&mut self, seq: Seq) {
        self.ranges.retain(|&(_, b)| b > seq.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lag_leaves_holes_out() {
        let mut h = Holes::default();
        h.add(Seq(10), Seq(1_000_010));
        assert_eq!(h.records(Seq(5), Seq(1_000_020)), 15);
        assert_eq!(h.back(Seq(1_000_020), 12), Seq(8));
        assert_eq!(h.back(Seq(1_000_020), 5), Seq(1_000_015));
        assert_eq!(h.back(Seq(1_000_020), 10), Seq(10), "a hole costs nothing");
        h.drop_below(Seq(1_000_010));
        assert_eq!(h.records(Seq(5), Seq(1_000_020)), 1_000_015);
    }

    proptest! {
        /// Against a seq-by-seq walk over a small space.
        #[test]
        fn matches_a_walk(cuts in proptest::collection::vec((0u64..200, 1u64..20), 0..6), from in 0u64..250, to in 0u64..250, n in 0u64..250) {
            let mut sorted = cuts.clone();
            sorted.sort();
            let mut h = Holes::default();
            let mut hole = vec![false; 260];
            for (a, len) in sorted {
                h.add(Seq(a), Seq(a + len));
                for s in a..(a + len).min(260) {
                    hole[s as usize] = true;
                }
            }
            let walk = (from..to.max(from)).filter(|s| !hole[*s as usize]).count() as u64;
            prop_assert_eq!(h.records(Seq(from), Seq(to.max(from))), walk);
            // back: the lowest s with at most n records in [s, to).
            let head = to;
            let mut s = head;
            let mut seen = 0;
            while s > 0 {
                let r = u64::from(!hole[(s - 1) as usize]);
                if seen + r > n {
                    break;
                }
                seen += r;
                s -= 1;
            }
            prop_assert_eq!(h.back(Seq(head), n), Seq(s));
        }
    }
}
