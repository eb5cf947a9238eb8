//! [`Inspector`]: a stopped outbox's data directory, opened read-only.
//!
//! Invariant: nothing here writes; every read decodes and checks what it
//! returns, and an error names the tree and key of what does not decode.

use std::path::Path;

use uuid::Uuid;

use super::CACHE_BYTES;
use super::check::{self, Report};
use super::types::{BatchInfo, Member, Offset, Verified};
use crate::dead_letter::DeadLetters;
use crate::error::Result;
use crate::log_record::{self, LogRecord};
use crate::store::{LogExtent, Store};
use crate::types::{Seq, SinkName};

/// The data directory of a stopped outbox, opened for reading only and not
/// verified first, so that a damaged one can still be looked at. Holds the
/// directory's lock while it lives.
pub struct Inspector {
    store: Store,
}

impl Inspector {
    /// Opens the existing data directory `dir` for reading. Nothing is
    /// written, not even the witness file.
    ///
    /// # Errors
    /// [`crate::StoreError::Io`] (`NotFound`) when `dir` does not exist;
    /// [`crate::StoreError::Locked`] while a process holds it;
    /// [`crate::StoreError::UnknownFormat`] for a newer format;
    /// [`crate::StoreError::StoreCorrupt`] when sled cannot open it;
    /// [`crate::StoreError::Corrupted`] when its meta does not decode.
    pub fn open(dir: impl AsRef<Path>) -> Result<Inspector> {
        Ok(Store::inspect(dir, CACHE_BYTES).map(Inspector::from_store)?)
    }

    pub(super) fn from_store(store: Store) -> Inspector {
        Inspector { store }
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// The log id minted when the directory was created.
    pub fn log_id(&self) -> Uuid {
        self.store.log_id()
    }

    /// When the directory was created, ms since the Unix epoch.
    pub fn created_at_ms(&self) -> u64 {
        self.store.created_at_ms()
    }

    /// The directory's on-disk format version, as found at the open
    /// ([`super::CURRENT_FORMAT`] is what this build writes).
    pub fn format_version(&self) -> u8 {
        self.store.dir_format()
    }

    /// Where the log starts and ends.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the first or last value does not
    /// decode.
    pub fn extent(&self) -> Result<LogExtent> {
        Ok(self.store.extent()?)
    }

    /// The first seq of a write a crash interrupted, when the store holds
    /// its intent: the values from there up were never receipted, and the
    /// next open for writing removes them.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the intent does not decode.
    pub fn interrupted_write(&self) -> Result<Option<Seq>> {
        Ok(self.store.interrupted_write()?.map(|w| Seq(w.first)))
    }

    /// The lowest seq that may still be assigned after truncation.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the stored value does not decode.
    pub fn seq_floor(&self) -> Result<Seq> {
        Ok(self.store.seq_floor()?)
    }

    /// Every seq ever receipted is below this one.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the stored value does not decode.
    pub fn seq_reserved(&self) -> Result<Seq> {
        Ok(self.store.seq_reserved()?)
    }

    /// What an open verifies: the log's chain, membership, offsets and the
    /// witness. Reads every log value once.
    ///
    /// # Errors
    /// What makes the store unusable: [`crate::StoreError::Corrupted`] or
    /// [`crate::StoreError::StoreCorrupt`] naming it.
    pub fn verify(&self) -> Result<Verified> {
        Ok(self.store.verify().map(Verified::new)?)
    }

    /// Every value of every tree decoded and cross-checked, as `outbox
    /// check` does; every problem is in the report, none stops it.
    pub fn check(&self) -> Report {
        check::check_store(&self.store)
    }

    /// Every member sink, orphans included.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the membership does not decode.
    pub fn members(&self) -> Result<Vec<Member>> {
        Ok(self.store.members()?.into_iter().map(Member::new).collect())
    }

    /// Every stored offset, by sink name.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when a key or value does not decode.
    pub fn offsets(&self) -> Result<Vec<Offset>> {
        Ok(self
            .store
            .offsets()?
            .into_iter()
            .map(|(sink, o)| Offset::new(sink, o))
            .collect())
    }

    /// The offset of `sink`, if it has one.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the value does not decode.
    pub fn offset(&self, sink: &SinkName) -> Result<Option<Offset>> {
        Ok(self
            .store
            .offset(sink)?
            .map(|o| Offset::new(sink.clone(), o)))
    }

    /// When `sink` was paused by an operator (ms since the Unix epoch), if
    /// it is paused.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the value does not decode.
    pub fn paused(&self, sink: &SinkName) -> Result<Option<u64>> {
        Ok(self.store.paused(sink)?.map(|p| p.at_ms))
    }

    /// The records `sink` is retrying, by seq, with their attempts so far
    /// (only those at or above its offset).
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when a value does not decode.
    pub fn retrying(&self, sink: &SinkName) -> Result<Vec<crate::Retrying>> {
        crate::retrying::read(&self.store, sink)
    }

    /// The records at or after `from`, in seq order, streamed.
    pub fn records(&self, from: Seq) -> impl Iterator<Item = Result<LogRecord>> + '_ {
        log_record::records(&self.store, self.store.log_id(), from)
    }

    /// Every log value's first seq and header, in seq order, checksums
    /// checked, without decoding the records.
    pub fn batches(&self) -> impl Iterator<Item = Result<BatchInfo>> + '_ {
        self.store.batch_headers().map(|h| {
            h.map(|(first, h)| BatchInfo::new(first, h))
                .map_err(Into::into)
        })
    }

    /// The DLQ: list, stream, select or look up its entries.
    pub fn dead_letters(&self) -> DeadLetters<'_> {
        DeadLetters::new(&self.store, self.store.log_id())
    }

    /// Keys in all trees (an O(n) count, for progress reporting).
    pub fn key_count(&self) -> u64 {
        self.store.key_count()
    }

    /// sled's CRC32 over every key and value of every tree: equal for a
    /// faithful copy.
    ///
    /// # Errors
    /// [`crate::StoreError::Io`] or [`crate::StoreError::Storage`].
    pub fn checksum(&self) -> Result<u32> {
        Ok(self.store.checksum()?)
    }

    /// Copies every tree into a new database in `out` (which must not exist
    /// or be empty), holding only the live keys: what `outbox compact`
    /// does. `progress` is called with the number of keys copied so far. On
    /// failure `out` is removed again.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] when `out` is not empty;
    /// [`crate::StoreError::Io`] or [`crate::StoreError::Storage`] when the
    /// copy fails.
    pub fn export_to(&self, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<()> {
        self.store.export_to(out, CACHE_BYTES, progress)
    }
}
