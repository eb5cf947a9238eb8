//! A worker's delivery window: the contiguous watermark over records handed
//! out in seq order and finished in any order. Pure: no I/O, no clock.
//!
//! Invariants:
//! - seqs are started in strictly increasing order (`start` hands out the
//!   next one; `pass` skips a range nothing will be delivered for);
//! - `done()` is the lowest seq not yet finished: every seq below it was
//!   delivered, dead-lettered, filtered, passed over or skipped, so it is exactly
//!   what the sink may commit as its offset (the *contiguous* watermark: a
//!   record finished out of order counts only once everything below it
//!   has);
//! - finishing a seq twice, or one that was never started or is already
//!   below the watermark, changes nothing (a late completion after a skip);
//! - `skip_to(s)` finishes everything below `s` at once (the Drop policy).

use std::collections::VecDeque;

use crate::types::Seq;

/// The watermark and the seqs in flight or finished above it.
#[derive(Debug, Clone)]
pub struct Window {
    /// Every seq below `base` is finished.
    base: u64,
    /// `finished[i]` is for seq `base + i`; its length is `next - base`.
    finished: VecDeque<bool>,
}

impl Window {
    /// A window whose watermark starts at `at` (the committed offset).
    pub fn new(at: Seq) -> Window {
        Window {
            base: at.0,
            finished: VecDeque::new(),
        }
    }

    /// The contiguous watermark: every seq below it is finished.
    pub fn done(&self) -> Seq {
        Seq(self.base)
    }

    /// The next seq to start.
    pub fn next(&self) -> Seq {
        Seq(self.base + self.finished.len() as u64)
    }

    /// Seqs started and not below the watermark (in flight, or finished
    /// out of order above it).
    #[cfg(test)]
    pub fn open(&self) -> u64 {
        self.finished.len() as u64
    }

    /// Starts the next seq and returns it.
    pub fn start(&mut self) -> Seq {
        let s = self.next();
        self.finished.push_back(false);
        s
    }

    /// Starts and finishes every seq from the next one up to `to`
    /// (exclusive): records nothing is delivered for.
    pub fn pass(&mut self, to: Seq) {
        self.advance();
        if self.finished.is_empty() {
            // Nothing open: the watermark jumps (a hole can span a million
            // seqs).
            self.base = self.base.max(to.0);
            return;
        }
        while self.next() < to {
            self.finished.push_back(true);
        }
        self.advance();
    }

    /// Finishes `seq`. Returns whether the watermark moved.
    pub fn finish(&mut self, seq: Seq) -> bool {
        let Some(i) = seq.0.checked_sub(self.base) else {
            return false;
        };
        match usize::try_from(i)
            .ok()
            .and_then(|i| self.finished.get_mut(i))
        {
            Some(f) => *f = true,
            None => return false,
        }
        self.advance()
    }

    /// Finishes everything below `to`, started or not.
    pub fn skip_to(&mut self, to: Seq) {
        while self.base < to.0 {
            if self.finished.pop_front().is_none() {
                // Nothing started up there: the watermark jumps.
                self.base = to.0;
                return;
            }
            self.base += 1;
        }
        self.advance();
    }

    fn advance(&mut self) -> bool {
        let before = self.base;
        while self.finished.front() == Some(&true) {
            self.finished.pop_front();
            self.base += 1;
        }
        self.base != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_watermark_waits_for_the_lowest_unfinished_seq() {
        let mut w = Window::new(Seq(10));
        let a = w.start();
        let b = w.start();
        let c = w.start();
        assert_eq!((a, b, c), (Seq(10), Seq(11), Seq(12)));
        assert!(!w.finish(c));
        assert!(!w.finish(b));
        assert_eq!(w.done(), Seq(10), "10 is still in flight");
        assert!(w.finish(a));
        assert_eq!((w.done(), w.next(), w.open()), (Seq(13), Seq(13), 0));
    }

    #[test]
    fn passes_skips_and_late_completions() {
        let mut w = Window::new(Seq(0));
        let a = w.start();
        w.pass(Seq(5)); // 1..5: a hole
        assert_eq!((w.done(), w.next()), (Seq(0), Seq(5)));
        w.finish(a);
        assert_eq!(w.done(), Seq(5));
        let b = w.start();
        let _c = w.start();
        w.skip_to(Seq(20));
        assert_eq!((w.done(), w.next()), (Seq(20), Seq(20)));
        assert!(!w.finish(b), "finished below the watermark: nothing moves");
        assert!(!w.finish(Seq(99)), "never started");
        assert_eq!(w.done(), Seq(20));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Start,
        Pass(u8),
        Finish(u16),
        Skip(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Start),
            1 => (0u8..5).prop_map(Op::Pass),
            4 => (0u16..300).prop_map(Op::Finish),
            1 => (0u8..10).prop_map(Op::Skip),
        ]
    }

    proptest! {
        /// Against a model that keeps the set of finished seqs and
        /// recomputes the watermark from scratch after every step.
        #[test]
        fn matches_a_set_model(start in 0u64..1000, ops in proptest::collection::vec(op(), 0..200)) {
            let mut w = Window::new(Seq(start));
            let mut next = start;
            let mut floor = start;
            let mut finished: BTreeSet<u64> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Start => {
                        prop_assert_eq!(w.start(), Seq(next));
                        next += 1;
                    }
                    Op::Pass(n) => {
                        let to = next + u64::from(n);
                        w.pass(Seq(to));
                        finished.extend(next..to);
                        next = to;
                    }
                    Op::Finish(k) => {
                        let s = start + u64::from(k);
                        w.finish(Seq(s));
                        if s < next {
                            finished.insert(s);
                        }
                    }
                    Op::Skip(n) => {
                        let model_done = (floor..).find(|s| !finished.contains(s) || *s >= next).unwrap();
                        let to = model_done + u64::from(n);
                        w.skip_to(Seq(to));
                        finished.extend(floor..to);
                        floor = floor.max(to);
                        next = next.max(to);
                    }
                }
                let done = (floor..).find(|s| *s >= next || !finished.contains(s)).unwrap();
                prop_assert_eq!(w.done(), Seq(done));
                prop_assert_eq!(w.next(), Seq(next));
                prop_assert_eq!(w.open(), next - done);
            }
        }
    }
}
