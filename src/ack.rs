//! The ack watermark: a pure state machine, no I/O.
//!
//! Invariants:
//! - a token registered at seq `s` is released exactly once, by the first
//!   call after which every tracked sink's offset is above `s`;
//! - offsets only move forward: a commit below the current offset is ignored;
//! - with no sinks tracked, the watermark is unbounded and a token is
//!   released as soon as it is registered (no sink holds the record back).
//!
//! The caller feeds it only *durable* offsets, which is what makes "a token is
//! never released before the offset commits that pass its record are durable"
//! hold.

use std::collections::VecDeque;

use crate::types::Seq;

/// Holds ack tokens until every sink's durable offset passes their record.
///
/// Tokens are kept flat, one `(seq, token)` pair each, so a backlog of a
/// million records with one token each costs 16 MiB for `u64` tokens rather
/// than a `Vec` allocation per record.
#[derive(Debug)]
pub struct AckTracker<T> {
    offsets: Vec<u64>,
    pending: VecDeque<(Seq, T)>,
}

impl<T> AckTracker<T> {
    /// A tracker for `offsets.len()` sinks, starting at these offsets.
    pub fn new(offsets: Vec<u64>) -> Self {
        AckTracker {
            offsets,
            pending: VecDeque::new(),
        }
    }

    /// The lowest offset over all sinks: every seq below it is released.
    pub fn watermark(&self) -> u64 {
        self.offsets.iter().copied().min().unwrap_or(u64::MAX)
    }

    /// The offset of one sink.
    pub fn offset(&self, sink: usize) -> Option<u64> {
        self.offsets.get(sink).copied()
    }

    /// Tokens waiting.
    pub fn pending_tokens(&self) -> usize {
        self.pending.len()
    }

    /// Holds `tokens` until the watermark passes `seq`. Returns them at once
    /// when it already has.
    pub fn register(&mut self, seq: Seq, tokens: Vec<T>) -> Vec<T> {
        if tokens.is_empty() {
            return tokens;
        }
        if seq.0 < self.watermark() {
            return tokens;
        }
        match self.pending.back() {
            Some((last, _)) if *last > seq => {
                let at = self.pending.partition_point(|(s, _)| *s <= seq);
                for (i, t) in tokens.into_iter().enumerate() {
                    self.pending.insert(at + i, (seq, t));
                }
            }
            _ => self.pending.extend(tokens.into_iter().map(|t| (seq, t))),
        }
        Vec::new()
    }

    /// Moves `sink`'s offset to `offset` (if that is forward) and returns the
    /// tokens this releases, in seq order.
    pub fn commit(&mut self, sink: usize, offset: u64) -> Vec<T> {
        if let Some(o) = self.offsets.get_mut(sink)
            && offset > *o
        {
            *o = offset;
        }
        self.release()
    }

    fn release(&mut self) -> Vec<T> {
        let w = self.watermark();
        let mut out = Vec::new();
        while let Some((seq, _)) = self.pending.front() {
            if seq.0 >= w {
                break;
            }
            if let Some((_, token)) = self.pending.pop_front() {
                out.push(token);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn releases_only_when_every_sink_passes() {
        let mut t = AckTracker::new(vec![0, 0]);
        assert!(t.register(Seq(0), vec!["a"]).is_empty());
        assert!(t.register(Seq(1), vec!["b", "c"]).is_empty());
        assert!(t.commit(0, 2).is_empty(), "sink 1 has not passed seq 0");
        assert_eq!(t.commit(1, 1), vec!["a"]);
        assert_eq!(t.commit(1, 2), vec!["b", "c"]);
        assert_eq!(t.pending_tokens(), 0);
        assert!(t.commit(1, 2).is_empty(), "released exactly once");
    }

    #[test]
    fn offsets_never_go_back() {
        let mut t = AckTracker::new(vec![5]);
        t.commit(0, 3);
        assert_eq!(t.offset(0), Some(5));
        assert_eq!(t.register(Seq(4), vec![1]), vec![1], "already passed");
    }

    #[test]
    fn no_sinks_releases_at_once() {
        let mut t: AckTracker<u8> = AckTracker::new(vec![]);
        assert_eq!(t.register(Seq(9), vec![7]), vec![7]);
    }

    #[test]
    fn out_of_order_registration_is_kept_sorted() {
        let mut t = AckTracker::new(vec![0]);
        t.register(Seq(5), vec![5]);
        t.register(Seq(2), vec![2]);
        assert_eq!(t.commit(0, 3), vec![2]);
        assert_eq!(t.commit(0, 6), vec![5]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register(u64),
        Commit(usize, u64),
    }

    fn op(sinks: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..40).prop_map(Op::Register),
            (0..sinks, 0u64..45).prop_map(|(s, o)| Op::Commit(s, o)),
        ]
    }

    proptest! {
        /// Against a model that recomputes everything from scratch: the set
        /// released after each step is exactly the registered tokens whose
        /// seq is below the minimum offset, and nothing is released twice.
        #[test]
        fn matches_model(sinks in 1usize..4, ops in proptest::collection::vec(op(3), 0..80)) {
            let mut t = AckTracker::new(vec![0; sinks]);
            let mut offsets = vec![0u64; sinks];
            let mut registered: BTreeMap<u32, u64> = BTreeMap::new();
            let mut released: BTreeMap<u32, u64> = BTreeMap::new();
            let mut next_token = 0u32;
            for op in ops {
                let out = match op {
                    Op::Register(seq) => {
                        let tok = next_token;
                        next_token += 1;
                        registered.insert(tok, seq);
                        t.register(Seq(seq), vec![tok])
                    }
                    Op::Commit(s, o) => {
                        let s = s % sinks;
                        offsets[s] = offsets[s].max(o);
                        t.commit(s, o)
                    }
                };
                for tok in out {
                    prop_assert!(released.insert(tok, registered[&tok]).is_none(), "token {} twice", tok);
                }
                let w = *offsets.iter().min().unwrap();
                for (tok, seq) in &registered {
                    prop_assert_eq!(released.contains_key(tok), *seq < w, "token {} seq {} watermark {}", tok, seq, w);
                }
            }
        }
    }
}
