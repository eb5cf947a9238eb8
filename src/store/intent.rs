//! Writes of the log that must be whole or absent, without sled batches.
//!
//! A request cut into several log values (an atomic `dispatch_many`, an
//! HTTP ingest request, a hole over many seqs), and a request written with
//! its idempotency key, must be all there after a crash or not at all.
//! sled's `apply_batch` and transactions would give that, but they pin
//! sled's log while they run, and sled's stability is contiguous: a page the
//! batch wrote, evicted by sled's cache and read back by a later write of
//! the same batch, waits for a stability that cannot come before the batch
//! ends. That hung a process in `Tree::apply_batch` (docs/performance.md,
//! "A hang on the branch"). So such a write is bracketed by an intent:
//!
//! 1. `meta.write_intent` ← [`WriteIntent`]: the first seq the write
//!    covers, and the `idem` entries it will add;
//! 2. the log values, one insert each, in seq order; then the `idem`
//!    entries;
//! 3. `meta.write_intent` is removed.
//!
//! Invariants:
//! - sled recovers a prefix of what was written (its log is replayed in
//!   order and ends at the first write that did not reach the disk), so
//!   after any crash either step 3 survived, and everything before it, or
//!   the intent is there and names everything the write may have left;
//! - [`Store::undo_interrupted_write`], run by every open for writing before
//!   anything else, removes the log values from the intent's seq up, the
//!   `idem` entries it names, and then the intent. None of that was ever
//!   receipted: a receipt waits for the flush that follows step 3. The seqs
//!   were reserved, so the engine's open covers them with a hole, as it does
//!   any reserved seq that was never receipted, and never hands them out
//!   again;
//! - no value at or above the intent's seq exists when the intent is
//!   written: seqs are assigned in increasing order and never reused;
//! - a write without a run or a key (values that each hold whole requests)
//!   needs no intent: each value is whole by itself.
//!
//! A build from before this module ignores the intent; opened after a crash
//! that left one, it would deliver the written part of the interrupted
//! request (never receipted, so nothing acknowledged is lost either way).

use super::Store;
use crate::codec::{self, IdemValue, WriteIntent, meta_key};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::Seq;

/// What [`Store::undo_interrupted_write`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Undone {
    /// The first seq of the interrupted write.
    pub from: Seq,
    /// Log values removed.
    pub values: usize,
    /// `idem` entries removed.
    pub idem_entries: usize,
}

impl Store {
    /// Inserts encoded log values. Those whose indexes fall in one of
    /// `atomic` must be whole after a crash, so when there are any the write
    /// is bracketed by an intent (see the module); the others are plain
    /// inserts. Not durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier failure; [`Error::Io`] (and the
    /// store is poisoned) when sled fails.
    pub fn append_runs(
        &self,
        values: Vec<(Seq, Vec<u8>)>,
        atomic: &[std::ops::Range<usize>],
    ) -> Result<()> {
        let whole = atomic.iter().any(|r| !r.is_empty());
        self.append_whole(values, &[], whole)
    }

    /// Inserts log values and the idempotency keys that name them, so that
    /// after a crash a key is there exactly when its records are. Not
    /// durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`] (and the store is poisoned).
    pub fn append_keyed(
        &self,
        values: Vec<(Seq, Vec<u8>)>,
        keys: &[(Vec<u8>, IdemValue)],
    ) -> Result<()> {
        self.append_whole(values, keys, true)
    }

    fn append_whole(
        &self,
        values: Vec<(Seq, Vec<u8>)>,
        keys: &[(Vec<u8>, IdemValue)],
        whole: bool,
    ) -> Result<()> {
        self.check_writable()?;
        let Some(&(first, _)) = values.first() else {
            return Ok(());
        };
        let mut idem = Vec::with_capacity(keys.len() * 2);
        for (key, v) in keys {
            let (k, value, t) = super::idem::entries(key, v)?;
            idem.push((t, Vec::new()));
            idem.push((k, value));
        }
        if whole {
            let intent = WriteIntent {
                first: first.0,
                idem_keys: idem.iter().map(|(k, _)| k.clone()).collect(),
            };
            let r = self
                .meta
                .insert(meta_key::WRITE_INTENT, codec::encode_write_intent(&intent)?)
                .map(|_| ());
            self.write_result(r)?;
        }
        for (first, value) in values {
            // One evaluation per value, as sled would fail one write.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("store::append", |m| self.write_result(Err(
                sled::Error::Io(std::io::Error::other(
                    m.unwrap_or_else(|| "injected log insert failure".into())
                ))
            )));
            let r = self
                .log
                .for_append(first, 1, value.len() as u64)
                .and_then(|g| g.tree.insert(codec::log_key(first), value))
                .map(|_| ());
            self.write_result(r)?;
        }
        for (k, v) in idem {
            let r = self.idem.insert(k, v).map(|_| ());
            self.write_result(r)?;
        }
        if whole {
            let r = self.meta.remove(meta_key::WRITE_INTENT).map(|_| ());
            self.write_result(r)?;
        }
        Ok(())
    }

    /// The write a crash interrupted, if the intent is there: its first seq.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the intent does not decode.
    pub fn interrupted_write(&self) -> Result<Option<WriteIntent>> {
        match self
            .meta
            .get(meta_key::WRITE_INTENT)
            .map_err(Error::from_sled)?
        {
            Some(v) => codec::decode_write_intent(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Removes what an interrupted write left (see the module), then its
    /// intent. Not flushed: the removals precede every later write in sled's
    /// log, so a crash before the next flush leaves the intent to undo
    /// again.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the intent does not decode; [`Error::Io`]
    /// (and the store is poisoned) when sled fails.
    pub(crate) fn undo_interrupted_write(&self) -> Result<Option<Undone>> {
        let Some(intent) = self.interrupted_write()? else {
            return Ok(None);
        };
        let from = Seq(intent.first);
        let mut keys = Vec::new();
        for g in self.log.gens() {
            let found = g
                .tree
                .range(codec::log_key(from)..)
                .keys()
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::from_sled)?;
            for k in found {
                let r = g.tree.remove(&k).map(|_| ());
                self.write_result(r)?;
                keys.push(k);
            }
        }
        let mut idem_entries = 0;
        for k in &intent.idem_keys {
            let r = self.idem.remove(k.as_slice());
            if self.write_result(r)?.is_some() {
                idem_entries += 1;
            }
        }
        let r = self.meta.remove(meta_key::WRITE_INTENT).map(|_| ());
        self.write_result(r)?;
        let undone = Undone {
            from,
            values: keys.len(),
            idem_entries,
        };
        tracing::warn!(
            from = from.0,
            values = undone.values,
            idem_entries,
            "a write a crash interrupted was undone: its records were never receipted, and its seqs become a hole"
        );
        Ok(Some(undone))
    }
}
