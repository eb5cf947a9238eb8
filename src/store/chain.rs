//! The log's chain: the values from the first to the last must cover every
//! seq exactly once. Pure: fed the `(first seq, count)` of each value in key
//! order, it reports the extent or the first break.

use crate::types::Seq;

/// Where the log starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogExtent {
    /// The first seq still in the log, if any value is.
    pub first: Option<Seq>,
    /// One past the last seq any value covers; `seq_floor` when the log is
    /// empty.
    pub end: Seq,
}

/// A break in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// No value covers `from..to`.
    Gap {
        /// First missing seq.
        from: Seq,
        /// One past the last missing seq.
        to: Seq,
    },
    /// The value at `at` starts before the previous value's end (`prev_end`).
    Overlap {
        /// The key of the overlapping value.
        at: Seq,
        /// Where the previous value ended.
        prev_end: Seq,
    },
}

/// Follows the chain value by value.
#[derive(Debug, Clone, Default)]
pub struct ChainWalk {
    first: Option<Seq>,
    end: Option<Seq>,
}

impl ChainWalk {
    /// Feeds the next value in key order.
    ///
    /// # Errors
    /// The break, if this value does not start where the previous ended.
    pub fn push(&mut self, first: Seq, count: u32) -> Result<(), Break> {
        if let Some(end) = self.end {
            if first > end {
                return Err(Break::Gap {
                    from: end,
                    to: first,
                });
            }
            if first < end {
                return Err(Break::Overlap {
                    at: first,
                    prev_end: end,
                });
            }
        }
        self.first.get_or_insert(first);
        self.end = Some(Seq(first.0 + u64::from(count)));
        Ok(())
    }

    /// The extent, given the floor for an empty log.
    pub fn finish(&self, floor: Seq) -> LogExtent {
        LogExtent {
            first: self.first,
            end: self.end.unwrap_or(floor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contiguous_chain_gives_its_extent() {
        let mut w = ChainWalk::default();
        assert_eq!(
            w.finish(Seq(7)),
            LogExtent {
                first: None,
                end: Seq(7)
            }
        );
        w.push(Seq(10), 5).unwrap();
        w.push(Seq(15), 1).unwrap();
        w.push(Seq(16), 100).unwrap();
        assert_eq!(
            w.finish(Seq(0)),
            LogExtent {
                first: Some(Seq(10)),
                end: Seq(116)
            }
        );
    }

    #[test]
    fn gaps_and_overlaps_are_named() {
        let mut w = ChainWalk::default();
        w.push(Seq(0), 10).unwrap();
        assert_eq!(
            w.push(Seq(12), 1),
            Err(Break::Gap {
                from: Seq(10),
                to: Seq(12)
            })
        );
        let mut w = ChainWalk::default();
        w.push(Seq(0), 10).unwrap();
        assert_eq!(
            w.push(Seq(9), 1),
            Err(Break::Overlap {
                at: Seq(9),
                prev_end: Seq(10)
            })
        );
    }
}
