//! The log's sled trees: generations, each holding a run of consecutive
//! values, dropped whole once every member has passed them.
//!
//! Why: sled 0.34 rewrites a whole leaf when it consolidates it (every 10
//! fragments) and when it splits it (past 16 entries), so a value appended
//! to one ever-growing tree was written about 3.3 times, and a truncation
//! that removed values one by one rewrote their leaves once more (as blob
//! files, past 512 KiB). A generation holds at most [`BLOB_SAFE`] bytes,
//! so whatever rewrites its leaf (a consolidation, a split, sled's segment
//! cleaner relocating it) writes it inline, never as a blob file, and
//! truncation drops the tree instead of removing its values.
//!
//! Layout: the tree `log` (start 0; every value of a directory written
//! before generations, and never appended to since) and the trees
//! `log.<first seq, 20 decimal digits>`. Keys are the values' first seqs as
//! in one tree.
//!
//! Invariants:
//! - a value is in the generation with the greatest start at or below its
//!   key, so the generations in start order, each in key order, are the
//!   log in seq order; a generation may be empty (created just before a
//!   crash). This holds because values are written in seq order, by one
//!   writer at a time (the appender, or an offline command);
//! - only the last generation takes new values, and only while [`takes`]
//!   says so (its first value, or one that keeps it within
//!   [`BLOB_SAFE`]); the tree `log` takes none;
//! - the last generation is never dropped, and a generation is dropped
//!   only when the next one starts at or below the truncation point, so
//!   every seq it holds is below that point;
//! - a dropped generation's sled tree is dropped only once no reader holds
//!   it (sled must not see a dropped tree used).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::codec::tree;
use crate::types::Seq;

/// sled 0.34 writes a page larger than this as a blob file of its own
/// (a quarter of its 2 MiB segment), less room for the node's own bytes.
const BLOB_SAFE: u64 = 480 << 10;

/// Whether a generation holding `values` values of `bytes` in all takes
/// one more of `incoming` bytes. Pure. Its first value always (one larger
/// than [`BLOB_SAFE`] is a blob whatever its tree); after that, only while
/// the whole leaf stays within [`BLOB_SAFE`], so that no rewrite of it is a
/// blob. An earlier rule that bounded only the leaves sled consolidates
/// (nine values of any size first) let sled's segment cleaner relocate
/// leaves of up to 864 KiB as blob files, which piled up: steady-state
/// disk 57-75 MiB against 48-57 with this rule (docs/performance.md).
pub(crate) fn takes(values: u64, bytes: u64, incoming: u64) -> bool {
    values == 0 || bytes + incoming <= BLOB_SAFE
}

/// How long the last generation takes no value before the log counts as
/// quiet and its values are removed one by one.
pub(crate) const QUIET: std::time::Duration = std::time::Duration::from_millis(20);

/// One generation.
pub(crate) struct Gen {
    /// The lowest seq it may hold.
    pub start: u64,
    pub tree: sled::Tree,
    /// The tree `log`, written before generations: never appended to.
    legacy: bool,
    /// Values and bytes appended since the open (only the last generation
    /// takes appends, so this is only read for it).
    values: AtomicU64,
    bytes: AtomicU64,
    /// Takes no more values: its values were removed one by one while it
    /// was idle, and the next append starts a new generation.
    sealed: AtomicBool,
}

impl Gen {
    /// Whether it takes a value of `incoming` bytes next.
    fn takes(&self, incoming: u64) -> bool {
        !self.legacy
            && !self.sealed.load(Ordering::Relaxed)
            && takes(
                self.values.load(Ordering::Relaxed),
                self.bytes.load(Ordering::Relaxed),
                incoming,
            )
    }

    fn note(&self, values: u64, bytes: u64) {
        self.values.fetch_add(values, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Where it sorts: by start, `log` before a generation of the same
    /// start.
    pub fn order(&self) -> (u64, bool) {
        (self.start, !self.legacy)
    }

    /// Takes no more values (see `sealed`).
    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Relaxed);
    }

    /// Whether this is the tree `log` of a directory written before
    /// generations.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The sled name of the tree.
    pub fn name(&self) -> String {
        if self.legacy {
            tree::LOG.to_string()
        } else {
            gen_name(self.start)
        }
    }
}

/// The name of the generation starting at `start`.
pub(crate) fn gen_name(start: u64) -> String {
    format!("{}.{start:020}", tree::LOG)
}

/// The start of the generation named `name`, if it names one.
pub(crate) fn parse_gen_name(name: &[u8]) -> Option<u64> {
    let rest = name
        .strip_prefix(tree::LOG.as_bytes())?
        .strip_prefix(b".")?;
    if rest.len() != 20 || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// The log's trees, in start order.
pub(crate) struct LogTrees {
    db: sled::Db,
    gens: RwLock<Vec<Arc<Gen>>>,
    /// Dropped from the log, waiting for the last reader to let go.
    retired: Mutex<Vec<Arc<Gen>>>,
    /// The last generation's start and value count, and when they were
    /// first seen so ([`LogTrees::last_if_idle`]).
    idle_seen: Mutex<Option<(u64, u64, std::time::Instant)>>,
}

/// The log's values in seq order, one generation after another; the next
/// generation is looked up when one ends, so a long log costs no copy of
/// the list per read.
pub(crate) struct GenIter<'a> {
    trees: &'a LogTrees,
    /// The generation being read.
    at: Option<(u64, bool)>,
    /// Its iterator, with the generation held, so that
    /// [`LogTrees::reap`] does not drop its tree while it is read.
    cur: Option<(Arc<Gen>, sled::Iter)>,
}

impl Iterator for GenIter<'_> {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((_, it)) = &mut self.cur
                && let Some(kv) = it.next()
            {
                return Some(kv);
            }
            let g = self.trees.next_gen(self.at)?;
            self.at = Some(g.order());
            let it = g.tree.iter();
            self.cur = Some((g, it));
        }
    }
}

impl LogTrees {
    /// Opens `log` and every generation found in `db`.
    ///
    /// # Errors
    /// sled's, when a tree cannot be opened.
    pub fn open(db: &sled::Db) -> sled::Result<LogTrees> {
        let mut gens = vec![Arc::new(Gen {
            start: 0,
            tree: db.open_tree(tree::LOG)?,
            legacy: true,
            values: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
        })];
        let mut starts: Vec<u64> = db
            .tree_names()
            .iter()
            .filter_map(|n| parse_gen_name(n))
            .collect();
        starts.sort_unstable();
        for start in starts {
            let tree = db.open_tree(gen_name(start))?;
            gens.push(Arc::new(Gen {
                start,
                tree,
                legacy: false,
                values: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                sealed: AtomicBool::new(false),
            }));
        }
        if let Some(last) = gens.last()
            && !last.legacy
        {
            // Reopened: count what the last one holds, so it fills up to the
            // same limits as if it had not been closed.
            let (mut n, mut b) = (0, 0);
            for kv in last.tree.iter() {
                let (_, v) = kv?;
                n += 1;
                b += v.len() as u64;
            }
            last.note(n, b);
        }
        Ok(LogTrees {
            db: db.clone(),
            gens: RwLock::new(gens),
            retired: Mutex::new(Vec::new()),
            idle_seen: Mutex::new(None),
        })
    }

    /// The generations now, in start order.
    pub fn gens(&self) -> Vec<Arc<Gen>> {
        self.gens.read().clone()
    }

    /// The generation that takes `values` values (`bytes` in all) whose
    /// first key is `first`, creating one when the last is full. A run of
    /// values written whole may span generations: its atomicity is the
    /// write intent's (`store::intent`), not a tree's.
    ///
    /// # Errors
    /// sled's, when a new tree cannot be created.
    pub fn for_append(&self, first: Seq, values: u64, bytes: u64) -> sled::Result<Arc<Gen>> {
        {
            let gens = self.gens.read();
            if let Some(g) = pick(&gens, first.0, bytes) {
                g.note(values, bytes);
                return Ok(g);
            }
        }
        let mut gens = self.gens.write();
        if let Some(g) = pick(&gens, first.0, bytes) {
            g.note(values, bytes);
            return Ok(g);
        }
        let g = Arc::new(Gen {
            start: first.0,
            tree: self.db.open_tree(gen_name(first.0))?,
            legacy: false,
            values: AtomicU64::new(values),
            bytes: AtomicU64::new(bytes),
            sealed: AtomicBool::new(false),
        });
        // Writers append in seq order (the appender, or an offline command
        // alone), so this is the end; kept sorted whatever happens.
        let at = gens.partition_point(|x| x.start <= first.0);
        gens.insert(at, g.clone());
        Ok(g)
    }

    /// The generation after the one at `after` (by [`Gen::order`]), or the
    /// first; one clone, under the read lock, however many there are.
    fn next_gen(&self, after: Option<(u64, bool)>) -> Option<Arc<Gen>> {
        let gens = self.gens.read();
        let i = match after {
            None => 0,
            Some(a) => gens.partition_point(|g| g.order() <= a),
        };
        gens.get(i).cloned()
    }

    /// The generation that holds `seq` if any does: the last with a start
    /// at or below it.
    fn gen_for(&self, seq: u64) -> Option<Arc<Gen>> {
        let gens = self.gens.read();
        match gens.partition_point(|g| g.start <= seq) {
            0 => None,
            i => Some(gens[i - 1].clone()),
        }
    }

    /// The generation before the one at `at` (by [`Gen::order`]).
    fn prev_gen(&self, at: (u64, bool)) -> Option<Arc<Gen>> {
        let gens = self.gens.read();
        match gens.partition_point(|g| g.order() < at) {
            0 => None,
            i => Some(gens[i - 1].clone()),
        }
    }

    /// Every value in seq order.
    pub fn iter(&self) -> GenIter<'_> {
        GenIter {
            trees: self,
            at: None,
            cur: None,
        }
    }

    /// The values from the one holding `from` (or the first after it) on.
    pub fn iter_from(&self, from: Seq) -> GenIter<'_> {
        let Some(g) = self.gen_for(from.0) else {
            return self.iter();
        };
        let key = crate::codec::log_key(from);
        let start = match g.tree.range(..=key).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            _ => key.to_vec(),
        };
        GenIter {
            trees: self,
            at: Some(g.order()),
            cur: Some((g.clone(), g.tree.range(start..))),
        }
    }

    /// The value with the greatest key at or below `key`.
    ///
    /// # Errors
    /// sled's.
    pub fn at_or_before(&self, key: &[u8]) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        let seq = crate::codec::decode_log_key(key).map_or(u64::MAX, |s| s.0);
        let mut g = self.gen_for(seq);
        while let Some(this) = g {
            if let Some(kv) = this.tree.range(..=key).next_back().transpose()? {
                return Ok(Some(kv));
            }
            g = self.prev_gen(this.order());
        }
        Ok(None)
    }

    /// The least key at or above `key`.
    ///
    /// # Errors
    /// sled's.
    pub fn key_at_or_after(&self, key: &[u8]) -> sled::Result<Option<sled::IVec>> {
        let seq = crate::codec::decode_log_key(key).map_or(0, |s| s.0);
        let mut g = self.gen_for(seq).or_else(|| self.next_gen(None));
        while let Some(this) = g {
            if let Some(k) = this.tree.range(key..).keys().next().transpose()? {
                return Ok(Some(k));
            }
            g = self.next_gen(Some(this.order()));
        }
        Ok(None)
    }

    /// The first value.
    ///
    /// # Errors
    /// sled's.
    pub fn first(&self) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        let mut g = self.next_gen(None);
        while let Some(this) = g {
            if let Some(kv) = this.tree.first()? {
                return Ok(Some(kv));
            }
            g = self.next_gen(Some(this.order()));
        }
        Ok(None)
    }

    /// The last value.
    ///
    /// # Errors
    /// sled's.
    pub fn last(&self) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        let mut g = self.gens.read().last().cloned();
        while let Some(this) = g {
            if let Some(kv) = this.tree.last()? {
                return Ok(Some(kv));
            }
            g = self.prev_gen(this.order());
        }
        Ok(None)
    }

    /// The value keyed `key`.
    ///
    /// # Errors
    /// sled's.
    pub fn get(&self, key: &[u8]) -> sled::Result<Option<sled::IVec>> {
        let seq = crate::codec::decode_log_key(key).map_or(0, |s| s.0);
        // The generation is held, not only its tree, so that
        // [`LogTrees::reap`] does not drop the tree during the read.
        let g = {
            let gens = self.gens.read();
            match gens.partition_point(|g| g.start <= seq) {
                0 => return Ok(None),
                i => gens[i - 1].clone(),
            }
        };
        g.tree.get(key)
    }

    /// Whether no generation holds a value.
    pub fn is_empty(&self) -> bool {
        self.gens().iter().all(|g| g.tree.is_empty())
    }

    /// Keys in every generation (an O(n) count).
    pub fn len(&self) -> usize {
        self.gens().iter().map(|g| g.tree.len()).sum()
    }

    /// Takes the first `n` generations after `log` out of the log, as
    /// counted by [`retirable`] (only ever more become retirable, and never
    /// the last); they are dropped from sled by [`LogTrees::reap`].
    pub fn retire_first(&self, n: usize) -> Vec<Arc<Gen>> {
        let mut gens = self.gens.write();
        let skip = usize::from(gens.first().is_some_and(|g| g.legacy));
        let n = n.min(gens.len().saturating_sub(skip + 1));
        let out: Vec<Arc<Gen>> = gens.drain(skip..skip + n).collect();
        self.retired.lock().extend(out.iter().cloned());
        out
    }

    /// The last generation, when it is not `log` and has taken no value for
    /// [`QUIET`] (as seen by calls to this): a log that has gone quiet,
    /// whose values may be removed one by one (it is never dropped: an
    /// append may be under way).
    pub fn last_if_idle(&self) -> Option<Arc<Gen>> {
        let last = self.gens.read().last().cloned()?;
        if last.legacy {
            return None;
        }
        let now = (last.start, last.values.load(Ordering::Relaxed));
        let mut seen = self.idle_seen.lock();
        match *seen {
            Some((s, v, since)) if (s, v) == now => (since.elapsed() >= QUIET).then_some(last),
            _ => {
                *seen = Some((now.0, now.1, std::time::Instant::now()));
                None
            }
        }
    }

    /// Drops from sled the retired generations no reader holds any more.
    ///
    /// # Errors
    /// sled's; that generation and the rest stay retired, to be tried again.
    pub fn reap(&self) -> sled::Result<usize> {
        let mut retired = self.retired.lock();
        let mut dropped = 0;
        let mut failed = None;
        retired.retain(|g| {
            if failed.is_some() || Arc::strong_count(g) > 1 {
                return true;
            }
            match self.db.drop_tree(g.name()) {
                Ok(_) => {
                    dropped += 1;
                    false
                }
                Err(e) => {
                    failed = Some(e);
                    true
                }
            }
        });
        failed.map_or(Ok(dropped), Err)
    }
}

/// How many of `gens` (none of them `log`), from the first, hold only seqs
/// below `below`: each save the last, whose next starts at or below it.
pub(crate) fn retirable(gens: &[Arc<Gen>], below: Seq) -> usize {
    gens.windows(2)
        .take_while(|w| w[1].start <= below.0)
        .count()
}

/// The generation that takes a value keyed `key`, if it may take one: the
/// last one with a start at or below it, unless that is the last and full.
fn pick(gens: &[Arc<Gen>], key: u64, bytes: u64) -> Option<Arc<Gen>> {
    let i = gens.iter().rposition(|g| g.start <= key)?;
    let g = &gens[i];
    if i + 1 == gens.len() && !g.takes(bytes) {
        return None;
    }
    Some(g.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_never_makes_sled_write_a_leaf_as_a_blob() {
        let kib = |n: u64| n << 10;
        // Its first value, whatever its size.
        assert!(takes(0, 0, kib(900)));
        // Large values: five of 96 KiB, not a sixth (576 KiB).
        assert!(takes(4, 4 * kib(96), kib(96)));
        assert!(!takes(5, 5 * kib(96), kib(96)));
        // Backlog values of 4 KiB: 120 to a generation.
        assert!(takes(119, 119 * kib(4), kib(4)));
        assert!(!takes(120, 120 * kib(4), kib(4)));
        // After a value larger than the limit, nothing more.
        assert!(!takes(1, kib(900), 1));
    }

    /// A reader holds the generation it reads, so a truncation that has
    /// retired it drops its tree only once the reader lets go.
    #[test]
    fn a_retired_generation_is_dropped_only_after_its_last_reader() {
        let d = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(d.path()).open().unwrap();
        let log = LogTrees::open(&db).unwrap();
        let put = |seq: u64| {
            // Counted as 600 KiB: the generation takes nothing more.
            let g = log.for_append(Seq(seq), 1, 600 << 10).unwrap();
            g.tree
                .insert(crate::codec::log_key(Seq(seq)), vec![0u8; 8])
                .unwrap();
        };
        // Each append fills its generation, so each starts a new one.
        put(0);
        put(10);
        put(20);
        assert_eq!(log.gens().len(), 4, "log and three generations");
        let mut reading = log.iter_from(Seq(0));
        assert!(reading.next().is_some());
        let got = log.get(&crate::codec::log_key(Seq(10))).unwrap();
        assert!(got.is_some());

        assert_eq!(log.retire_first(2).len(), 2);
        let names = || {
            db.tree_names()
                .iter()
                .filter_map(|n| parse_gen_name(n))
                .collect::<Vec<_>>()
        };
        // The second was read (`get`) and let go; the reader holds the first.
        assert_eq!(log.reap().unwrap(), 1);
        assert_eq!(names(), [0, 20]);
        assert_eq!(log.reap().unwrap(), 0, "the reader still holds it");
        // The reader goes on, to the generation after the first still in
        // the log, and lets go of the first.
        let (k, _) = reading.next().unwrap().unwrap();
        assert_eq!(k.as_ref(), crate::codec::log_key(Seq(20)));
        assert_eq!(log.reap().unwrap(), 1);
        assert_eq!(names(), [20]);
        drop(reading);
        assert_eq!(log.reap().unwrap(), 0, "the last is never retired");
        assert_eq!(names(), [20]);
    }

    #[test]
    fn names_round_trip_and_others_are_not_generations() {
        assert_eq!(gen_name(42), "log.00000000000000000042");
        assert_eq!(parse_gen_name(gen_name(42).as_bytes()), Some(42));
        assert_eq!(
            parse_gen_name(gen_name(u64::MAX).as_bytes()),
            Some(u64::MAX)
        );
        for other in [
            "log",
            "log.",
            "log.42",
            "offsets",
            "log.0000000000000000004x",
        ] {
            assert_eq!(parse_gen_name(other.as_bytes()), None, "{other}");
        }
    }
}
