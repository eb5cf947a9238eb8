//! In-memory views of the log's tail: the decoded batches the workers read
//! without going to sled, and the byte index that byte lag limits use.
//!
//! Both are plain data structures with no I/O. The cache is a pure
//! optimisation: a batch missing from it is read back from sled.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::store::Batch;
use crate::types::Seq;

/// Recently published batches, bounded by bytes.
#[derive(Debug, Default)]
pub struct TailCache {
    batches: BTreeMap<u64, Arc<Batch>>,
    bytes: usize,
    cap: usize,
}

impl TailCache {
    /// A cache holding at most about `cap` bytes of records.
    pub fn new(cap: usize) -> Self {
        TailCache {
            batches: BTreeMap::new(),
            bytes: 0,
            cap,
        }
    }

    /// Adds a batch, evicting the oldest ones beyond the cap.
    pub fn insert(&mut self, batch: Arc<Batch>) {
        if self.cap == 0 {
            return;
        }
        self.bytes += cost(&batch);
        self.batches.insert(batch.first.0, batch);
        while self.bytes > self.cap {
            match self.batches.pop_first() {
                Some((_, b)) => self.bytes -= cost(&b),
                None => break,
            }
        }
    }

    /// The batch holding `seq`, if cached.
    pub fn get(&self, seq: Seq) -> Option<Arc<Batch>> {
        let (_, b) = self.batches.range(..=seq.0).next_back()?;
        (b.end() > seq).then(|| b.clone())
    }

    /// Forgets batches that end at or below `seq`.
    pub fn evict_below(&mut self, seq: Seq) {
        while let Some(entry) = self.batches.first_entry() {
            if entry.get().end() > seq {
                break;
            }
            self.bytes -= cost(&entry.remove());
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a batch is charged against the cap: its record bytes plus a fixed
/// overhead per record, so empty payloads still count.
fn cost(b: &Batch) -> usize {
    b.header.bytes as usize + 64 * b.entries.len()
}

/// Cumulative bytes per batch, so the bytes between two seqs can be found by
/// binary search. Granularity is one batch: a seq inside a batch counts the
/// whole batch.
#[derive(Debug, Default)]
pub struct ByteIndex {
    /// (first seq of batch, bytes of every earlier indexed batch)
    starts: VecDeque<(u64, u64)>,
    total: u64,
}

impl ByteIndex {
    /// Appends a batch; batches must come in seq order.
    pub fn push(&mut self, first: Seq, bytes: u64) {
        self.starts.push_back((first.0, self.total));
        self.total += bytes;
    }

    /// Bytes from the batch holding `from` to the end.
    pub fn bytes_from(&self, from: Seq) -> u64 {
        let i = self.starts.partition_point(|(s, _)| *s <= from.0);
        match i.checked_sub(1).and_then(|i| self.starts.get(i)) {
            Some((_, before)) => self.total - before,
            None => self
                .starts
                .front()
                .map(|(_, b)| self.total - b)
                .unwrap_or(0),
        }
    }

    /// The first seq from which at most `limit` bytes remain: the start of
    /// the oldest batch that fits.
    pub fn floor_for(&self, limit: u64) -> Option<Seq> {
        let i = self
            .starts
            .partition_point(|(_, before)| self.total - before > limit);
        self.starts.get(i).map(|(s, _)| Seq(*s))
    }

    /// Forgets batches that start below `seq` (whole batches passed by
    /// everyone).
    pub fn drop_below(&mut self, seq: Seq) {
        while self.starts.len() > 1 && self.starts.get(1).is_some_and(|(s, _)| *s <= seq.0) {
            self.starts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BatchHeader, LogEntry};
    use crate::types::Record;

    fn batch(first: u64, n: usize, each: usize) -> Arc<Batch> {
        Arc::new(Batch {
            first: Seq(first),
            header: BatchHeader {
                kind: crate::codec::BatchKind::Records,
                count: n as u32,
                bytes: (n * each) as u64,
                appended_at_ms: 0,
            },
            entries: (0..n)
                .map(|_| LogEntry::new(Record::new(vec![0; each])))
                .collect(),
        })
    }

    #[test]
    fn cache_finds_and_evicts() {
        let mut c = TailCache::new(1000 + 8 * 64);
        c.insert(batch(0, 4, 100));
        c.insert(batch(4, 4, 100));
        assert_eq!(c.get(Seq(5)).unwrap().first, Seq(4));
        assert_eq!(c.get(Seq(3)).unwrap().first, Seq(0));
        assert!(c.get(Seq(8)).is_none());
        c.insert(batch(8, 4, 100)); // 1200 > 1000: oldest goes
        assert!(c.get(Seq(0)).is_none());
        assert_eq!(c.bytes(), 800 + 8 * 64);
        c.evict_below(Seq(8));
        assert!(c.get(Seq(4)).is_none());
        assert_eq!(c.bytes(), 400 + 4 * 64);
    }

    #[test]
    fn byte_index_measures_and_floors() {
        let mut b = ByteIndex::default();
        b.push(Seq(0), 100);
        b.push(Seq(10), 50);
        b.push(Seq(20), 30);
        assert_eq!(b.bytes_from(Seq(0)), 180);
        assert_eq!(b.bytes_from(Seq(15)), 80);
        assert_eq!(b.bytes_from(Seq(25)), 30);
        assert_eq!(b.floor_for(80), Some(Seq(10)));
        assert_eq!(b.floor_for(79), Some(Seq(20)));
        assert_eq!(b.floor_for(1000), Some(Seq(0)));
        b.drop_below(Seq(12));
        assert_eq!(b.bytes_from(Seq(12)), 80);
    }
}
