//! The sled store: one `sled::Db` in a data directory: the log's trees and five others.
//!
//! | tree      | key                                   | value                                   |
//! |-----------|---------------------------------------|-----------------------------------------|
//! | `log`, `log.<first seq, 20 digits>` | BE u64 first seq of a value | version, kind, count, bytes, time, entries, CRC32C |
//! | `offsets` | sink name (UTF-8)                     | version, bincode `OffsetValue`, CRC32C  |
//! | `dlq`     | name length (u8), name, BE u64 seq    | version, bincode `DlqEntry`, CRC32C     |
//! | `meta`    | `format_version`, `log_id`, `created_at_ms`, `seq_floor`, `seq_reserved`, `members`, `write_intent` | see [`crate::codec`] |
//! | `idem`    | an idempotency key (bytes)            | version, bincode `IdemValue`, CRC32C    |
//! | `sink_state` | `r`, name length, name, BE u64 seq; `p`, name | version, bincode `RetryState` / `PauseState`, CRC32C |
//!
//! The log is a series of trees, generations ([`log_trees`]): read in order
//! they are one tree keyed by seq.
//!
//! Invariants:
//! - the log is a chain: the value keyed `k` with count `n` covers seqs
//!   `k..k+n`, and from the first value to the last every seq is covered
//!   exactly once (records, or an explicit hole or lost marker); a reader
//!   that finds a gap, an overlap or a bad checksum reports it, naming the
//!   range, and never moves past it;
//! - a seq is never assigned twice: every seq ever receipted is below
//!   `meta.seq_reserved`, which is raised durably before any receipt could
//!   name a seq above it, and the next seq after an open is at least that;
//!   truncation raises `seq_floor` to the end of what it removes, durably,
//!   before it removes anything;
//! - every member sink (configured, or orphaned and not yet forgotten) has
//!   an offset, and `o` means every seq below `o` is done for that sink; no
//!   value a member has not passed is ever truncated;
//! - a write that must be whole (a request over several values, or with an
//!   idempotency key) is bracketed by `meta.write_intent`, and every open
//!   for writing first undoes one a crash left (`store::intent`); appends
//!   use no sled batch or transaction;
//! - after a failed write, flush or fsync the store is poisoned and refuses
//!   writes until it is reopened; it never retries a failed fsync as if the
//!   data had reached the disk.
//!
//! Errors: the store's functions fail with a [`crate::StoreError`]
//! (imported as `Error` in its files). The few that check a caller's
//! argument (`forget`, `redrive_offline`, the `compact` and `salvage`
//! copies) and the group commit's waits, which end with
//! [`crate::DispatchErrorKind::ShuttingDown`] once the flusher has stopped,
//! return the crate's [`crate::Error`].
//!
//! Storage assumptions: sled's `flush` writes its buffers and calls
//! `sync_file_range`, which survives a process kill (the data is in the page
//! cache) but not a power loss. A store opened with `fsync` (the `full`
//! policy) adds `fdatasync` of sled's file, and `fsync` of new blob files and
//! of directories whose entries changed (`store::sync`). The byte layout is in
//! `docs/design.md`.

mod chain;
mod compact;
mod dlq;
mod durability;
mod idem;
mod intent;
mod log_trees;
mod members;
mod open;
mod pending;
mod salvage;
mod since;
mod sink_state;
mod sync;
mod verify;
pub mod witness;

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::codec::{self, BatchHeader, BatchKind, DlqEntry, LogEntry, OffsetValue};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::{Seq, SinkName};

pub use chain::LogExtent;
pub use dlq::{DlqPage, Selection};
pub use durability::{Durability, FlushMode, Ticket};
pub use members::plan_membership;
pub use open::{StoreOptions, is_locked};
pub use pending::RecordsAt;
pub use salvage::{InterruptedWrite, Loss, Restart, SalvageReport, SeqRanges, salvage};
pub(crate) use since::{Since, monotonic_ms};
pub use verify::Verified;

/// A decoded log value: its first seq, header and entries (none for a hole
/// or lost marker).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The first seq the value covers.
    pub first: Seq,
    /// The header.
    pub header: BatchHeader,
    /// The records, in seq order; empty unless the kind is records.
    pub entries: Vec<LogEntry>,
}

impl Batch {
    /// One past the last seq the value covers.
    pub fn end(&self) -> Seq {
        Seq(self.first.0 + u64::from(self.header.count))
    }

    /// The record at `seq`, if the value holds records and covers it.
    pub fn entry(&self, seq: Seq) -> Option<&LogEntry> {
        let i = seq.0.checked_sub(self.first.0)?;
        self.entries.get(usize::try_from(i).ok()?)
    }
}

/// The witness file's side of [`Store`].
#[derive(Debug, Default)]
struct WitnessFile {
    /// What the file says, if the store wrote or read it.
    on_disk: Option<witness::Witness>,
    /// DLQ entries noted as removed since the open.
    dlq_removed: u64,
}

/// What had been written to sled when a flush started, to be recorded in
/// the witness file once that flush returns ([`Store::write_witness`]).
#[derive(Debug, Clone)]
pub(crate) struct WitnessSnapshot {
    witness: witness::Witness,
    dlq_removed: u64,
}

/// The store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    db: sled::Db,
    log: log_trees::LogTrees,
    offsets: sled::Tree,
    dlq: sled::Tree,
    meta: sled::Tree,
    idem: sled::Tree,
    path: PathBuf,
    log_id: Uuid,
    created_at_ms: u64,
    /// The directory's format version when it was opened.
    format: codec::FormatVersion,
    /// `meta/format_version` as found at the open (a version 2 directory
    /// opened for writing is marked 3 then; see [`codec::DIR_FORMAT`]).
    dir_format: u8,
    poisoned: Mutex<Option<String>>,
    /// Serialises offset writers so an offset never goes backwards on disk.
    offset_lock: Mutex<()>,
    /// What has been written to sled (not yet necessarily flushed): the
    /// flusher snapshots it before a flush and records it in the witness
    /// file after (see [`witness`]).
    written: Mutex<witness::Witness>,
    /// The witness file as last written, and the DLQ removals noted so far.
    /// Its lock serialises every write of the file.
    witness_file: Mutex<WitnessFile>,
    /// fsync of sled's files after each flush, when the store is opened
    /// with `fsync` (the `full` policy).
    files: Option<Mutex<sync::FileSync>>,
    /// Opened for inspection: nothing is written, not even at drop.
    inspect: bool,
}

impl Store {
    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log id minted when the directory was created.
    pub fn log_id(&self) -> Uuid {
        self.log_id
    }

    /// When the directory was created, ms since the Unix epoch.
    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// The directory's format byte (see [`codec::DIR_FORMAT`]).
    pub fn dir_format(&self) -> u8 {
        self.dir_format
    }

    /// The directory's value format, as found at open.
    pub fn format(&self) -> codec::FormatVersion {
        self.format
    }

    fn meta_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.meta.get(key).map_err(Error::from_sled)? {
            Some(v) => Ok(Some(codec::decode_meta_u64(key, &v)?)),
            None => Ok(None),
        }
    }

    /// The lowest seq that may still be assigned after truncation (see the
    /// module invariants).
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the stored value does not decode.
    pub fn seq_floor(&self) -> Result<Seq> {
        Ok(Seq(self.meta_u64(codec::meta_key::SEQ_FLOOR)?.unwrap_or(0)))
    }

    /// Every seq ever receipted is below this one.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the stored value does not decode.
    pub fn seq_reserved(&self) -> Result<Seq> {
        Ok(Seq(self
            .meta_u64(codec::meta_key::SEQ_RESERVED)?
            .unwrap_or(0)))
    }

    /// Sets the reservation to `to` and makes it durable against a power
    /// loss whatever the sync policy (sled's flush, then `fdatasync` of its
    /// file): a reservation is what keeps a seq receipted and then lost from
    /// being handed to another record. Called once per reservation chunk,
    /// and at a clean shutdown to give back what was not used.
    ///
    /// # Errors
    /// [`Error::Poisoned`], or [`Error::Io`] (and the store is poisoned).
    pub fn reserve_seqs(&self, to: Seq) -> Result<()> {
        self.put_meta_u64(codec::meta_key::SEQ_RESERVED, to.0)?;
        self.flush()?;
        if self.files.is_none() {
            let synced = std::fs::File::open(self.path.join("db")).and_then(|f| f.sync_data());
            if let Err(e) = synced {
                self.poison(&format!("fsync: {e}"));
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    fn put_meta_u64(&self, key: &[u8], v: u64) -> Result<()> {
        self.check_writable()?;
        let value = codec::encode_meta_u64(key, v)?;
        let r = self.meta.insert(key, value).map(|_| ());
        self.write_result(r)
    }

    fn check_writable(&self) -> Result<()> {
        if self.inspect {
            return Err(Error::Storage(
                format!(
                    "{} was opened for inspection only; nothing is written",
                    self.path.display()
                )
                .into(),
            ));
        }
        match &*self.poisoned.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Marks the store failed after a write, flush or fsync error.
    pub(crate) fn poison(&self, why: &str) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            tracing::error!(
                error = why,
                "store write failed; refusing further writes until reopened"
            );
            *p = Some(why.to_string());
        }
    }

    /// Whether an earlier failure poisoned the store, and why.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    fn write_result<T>(&self, r: std::result::Result<T, sled::Error>) -> Result<T> {
        r.map_err(|e| {
            let e = Error::from_sled(e);
            self.poison(&e.to_string());
            e
        })
    }

    /// Writes a hole: seqs `from..to` that were reserved and never
    /// receipted. Not durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn write_marker(&self, kind: BatchKind, from: Seq, to: Seq) -> Result<Vec<Batch>> {
        let mut out = Vec::new();
        let mut values = Vec::new();
        let mut at = from.0;
        while at < to.0 {
            let count = (to.0 - at).min(u64::from(u32::MAX)) as u32;
            let header = BatchHeader {
                kind,
                count,
                bytes: 0,
                appended_at_ms: now_ms(),
            };
            values.push((Seq(at), codec::encode_batch(Seq(at), header, &[])?));
            out.push(Batch {
                first: Seq(at),
                header,
                entries: Vec::new(),
            });
            at += u64::from(count);
        }
        let n = values.len();
        self.append_runs(values, std::slice::from_ref(&(0..n)))?;
        self.note_appended(to);
        Ok(out)
    }

    /// Reads the value covering `seq`.
    ///
    /// # Errors
    /// [`Error::Corrupted`] naming the range when no value covers `seq`
    /// (`head` bounds the range reported when nothing follows), or when the
    /// value fails its checksum or does not decode.
    pub fn read_at(&self, seq: Seq, head: Seq) -> Result<Batch> {
        let key = codec::log_key(seq);
        if let Some((k, v)) = self.log.at_or_before(&key).map_err(Error::from_sled)? {
            let (first, h) =
                codec::decode_batch_header(&k, &v).map_err(|e| self.unreadable_value(&k, &v, e))?;
            if first.0 + u64::from(h.count) > seq.0 {
                return decode(&k, &v).map_err(|e| self.unreadable_value(&k, &v, e));
            }
        }
        let next = self
            .log
            .key_at_or_after(&key)
            .map_err(Error::from_sled)?
            .map(|k| codec::decode_log_key(&k))
            .transpose()?;
        Err(missing_range(seq, next.unwrap_or(head).max(seq.next())))
    }

    /// The value covering `seq`, as [`Store::read_at`] reads it (and fails),
    /// then the values that follow it without a gap, below `head`, while
    /// their records come to less than `bytes`. A value after the first
    /// that does not read ends the run: the next read starts there and
    /// reports it.
    ///
    /// # Errors
    /// As [`Store::read_at`], for the first value only.
    pub fn read_run(&self, seq: Seq, head: Seq, bytes: u64) -> Result<Vec<Batch>> {
        let first = self.read_at(seq, head)?;
        let mut next = first.end();
        let mut total = first.header.bytes;
        let mut out = vec![first];
        if total >= bytes || next >= head {
            return Ok(out);
        }
        for b in self.iter_batches(next) {
            let Ok(b) = b else { break };
            if b.first != next || b.first >= head || total >= bytes {
                break;
            }
            next = b.end();
            total += b.header.bytes;
            out.push(b);
        }
        Ok(out)
    }

    /// Every value's first seq and header, in seq order, checksums checked,
    /// without decoding the records.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a key or header does not decode.
    pub fn batch_headers(&self) -> impl Iterator<Item = Result<(Seq, BatchHeader)>> + '_ {
        self.log.iter().map(|kv| {
            let (k, v) = kv.map_err(Error::from_sled)?;
            codec::decode_batch_header(&k, &v)
        })
    }

    /// Iterates decoded values starting with the one holding `from`.
    pub fn iter_batches(&self, from: Seq) -> impl Iterator<Item = Result<Batch>> + '_ {
        self.log.iter_from(from).map(|kv| {
            let (k, v) = kv.map_err(Error::from_sled)?;
            decode(&k, &v)
        })
    }

    /// Raw iteration for `check` and `salvage`: every key and value of a
    /// tree, undecoded; for `log`, every generation's in seq order.
    pub fn raw(
        &self,
        tree: &str,
    ) -> Option<impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_> {
        let t = match tree {
            codec::tree::LOG => {
                return Some(
                    Box::new(self.log.iter().map(|kv| kv.map_err(Error::from_sled)))
                        as Box<dyn Iterator<Item = _>>,
                );
            }
            codec::tree::OFFSETS => &self.offsets,
            codec::tree::DLQ => &self.dlq,
            codec::tree::META => &self.meta,
            codec::tree::IDEM => &self.idem,
            _ => return None,
        };
        Some(Box::new(t.iter().map(|kv| kv.map_err(Error::from_sled))))
    }

    /// Every stored offset, by sink name.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a key or value does not decode.
    pub fn offsets(&self) -> Result<Vec<(SinkName, OffsetValue)>> {
        let mut out = Vec::new();
        for kv in self.offsets.iter() {
            let (k, v) = kv.map_err(Error::from_sled)?;
            out.push((codec::decode_offset_key(&k)?, codec::decode_offset(&k, &v)?));
        }
        Ok(out)
    }

    /// One sink's stored offset.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the value does not decode.
    pub fn offset(&self, sink: &SinkName) -> Result<Option<OffsetValue>> {
        let k = sink.as_str().as_bytes();
        match self.offsets.get(k).map_err(Error::from_sled)? {
            Some(v) => Ok(Some(codec::decode_offset(k, &v)?)),
            None => Ok(None),
        }
    }

    /// Writes `sink`'s offset as `offset` (never lower than what is stored) and
    /// inserts `dlq` entries, all in one sled transaction. Returns the offset
    /// now stored. Not durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::ValueRejected`] (a DLQ entry too large to
    /// store; nothing is written), or [`Error::Io`] (and the store is
    /// poisoned).
    pub fn commit_offset(&self, sink: &SinkName, offset: Seq, dlq: &[DlqEntry]) -> Result<Seq> {
        use sled::Transactional;
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = dlq
            .iter()
            .map(|e| {
                let key = codec::dlq_key(sink, Seq(e.seq));
                codec::encode_dlq(&key, e).map(|v| (key, v))
            })
            .collect::<Result<_>>()?;
        // The poison check is under the lock: a commit that failed (and
        // poisoned) under it is seen by every commit after it, so no other
        // sink's offset moves once one offset write has failed.
        let _g = self.offset_lock.lock();
        self.check_writable()?;
        let key = sink.as_str().as_bytes();
        // `written` holds every sink's last written offset (loaded at open,
        // updated here under the lock), so no sled read is needed.
        let stored = self.written.lock().offsets.get(sink.as_str()).copied();
        let offset = offset.0.max(stored.unwrap_or(0));
        let value = codec::encode_offset(
            key,
            &OffsetValue {
                offset,
                updated_at_ms: now_ms(),
            },
        )?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::commit_offset", |m| self.write_result(Err(
            sled::Error::Io(std::io::Error::other(
                m.unwrap_or_else(|| "injected offset transaction failure".into())
            ))
        )));
        if encoded.is_empty() {
            if stored != Some(offset) {
                let r = self.offsets.insert(key, value).map(|_| ());
                self.write_result(r)?;
            }
            self.written.lock().offsets.insert(sink.to_string(), offset);
            return Ok(Seq(offset));
        }
        let dead_lettered = encoded.len() as u64;
        let r = (&self.offsets, &self.dlq).transaction(|(offsets, dlq_t)| {
            offsets.insert(key, value.as_slice())?;
            for (k, v) in &encoded {
                dlq_t.insert(k.as_slice(), v.as_slice())?;
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        });
        match r {
            Ok(()) => {
                let mut w = self.written.lock();
                w.offsets.insert(sink.to_string(), offset);
                w.dlq += dead_lettered;
                Ok(Seq(offset))
            }
            Err(sled::transaction::TransactionError::Storage(e)) => self.write_result(Err(e)),
            Err(sled::transaction::TransactionError::Abort(())) => {
                Err(Error::Storage("offset transaction aborted".into()))
            }
        }
    }

    /// Removes what ends at or below `below`: whole generations, or, in the
    /// tree `log` of a directory written before generations, values (up to
    /// `max`).
    /// First raises `seq_floor` to the end of the last value removed and
    /// makes it durable, so a seq is never reused even if every value goes.
    /// Returns the seqs removed and the values (or whole generations).
    ///
    /// # Errors
    /// [`Error::Corrupted`] on an undecodable header; I/O errors poison.
    pub fn truncate_below(&self, below: Seq, max: usize) -> Result<(u64, u64)> {
        self.check_writable()?;
        // Generations retired by an earlier pass that a reader still held.
        let r = self.log.reap();
        self.write_result(r)?;
        let all = self.log.gens();
        // Whole generations: those the next one starts at or below `below`;
        // never the tree `log` (emptied value by value, below).
        let legacy = all.first().filter(|g| g.is_legacy()).cloned();
        let gens = &all[usize::from(legacy.is_some())..];
        let whole = log_trees::retirable(gens, below);
        let mut keys = Vec::new();
        let mut end = 0u64;
        let mut records = 0u64;
        let mut values = 0u64;
        let mut target = None;
        // The tree `log` goes first, value by value: it holds the chain's
        // start, so nothing after it may go before it.
        let one = match legacy.filter(|g| !g.tree.is_empty()) {
            Some(l) => Some(l),
            None if whole > 0 => None,
            None => self.log.last_if_idle(),
        };
        let whole = if one.is_some() { 0 } else { whole };
        if whole > 0 {
            end = gens[whole].start;
            // Counted as trees, not read: a retired generation's values may
            // be out of the cache.
            values = whole as u64;
            let from = self.log.first().map_err(Error::from_sled)?;
            let from = match from {
                Some((k, _)) => codec::decode_log_key(&k)?.0,
                None => end,
            };
            records = end.saturating_sub(from);
        } else if let Some(one) = one {
            // Value by value: the tree `log` of a directory written before
            // generations, which may hold a long backlog, or the last
            // generation once the log has gone quiet (it is never dropped,
            // and then takes no more values).
            for kv in one.tree.iter() {
                if keys.len() >= max {
                    break;
                }
                let (k, v) = kv.map_err(Error::from_sled)?;
                let (first, h) = codec::decode_batch_header(&k, &v)?;
                let batch_end = first.0 + u64::from(h.count);
                if batch_end > below.0 {
                    break;
                }
                keys.push(k);
                end = batch_end;
                records += u64::from(h.count);
            }
            values = keys.len() as u64;
            if values > 0 {
                if !one.is_legacy() {
                    one.seal();
                }
                target = Some(one);
            }
        }
        drop(all);
        if whole == 0 && keys.is_empty() {
            return Ok((0, 0));
        }
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::truncate::floor", |m| self.write_result(Err(
            sled::Error::Io(std::io::Error::other(m.unwrap_or_else(|| {
                "injected truncation failure before the floor".into()
            })))
        )));
        if self.seq_floor()?.0 < end {
            self.put_meta_u64(codec::meta_key::SEQ_FLOOR, end)?;
            self.flush()?;
        }
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::truncate::remove", |m| self.write_result(Err(
            sled::Error::Io(std::io::Error::other(m.unwrap_or_else(|| {
                "injected truncation failure after the floor".into()
            })))
        )));
        if whole > 0 {
            self.log.retire_first(whole);
            let r = self.log.reap();
            self.write_result(r)?;
        } else if let Some(one) = target {
            // One removal at a time, in key order, not a sled batch (whose
            // pinned log can hang, `store::intent`): the floor is durable
            // already, so a crash between removals leaves a shorter prefix
            // below it, the same state as a crash before any removal, and
            // sled recovers a prefix of its writes.
            for k in keys {
                let r = one.tree.remove(k).map(|_| ());
                self.write_result(r)?;
            }
        }
        Ok((records, values))
    }

    /// Makes every write so far durable at the store's level: sled's flush,
    /// then (when opened with `fsync`) the fsyncs of `store::sync`.
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier failure; [`Error::Io`] when the
    /// flush or an fsync fails, after which the store is poisoned: a failed
    /// fsync may have dropped the dirty pages, so it is never retried as if
    /// they were still there.
    pub fn flush(&self) -> Result<()> {
        self.check_writable()?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::flush", |m| {
            let e = std::io::Error::other(m.unwrap_or_else(|| "injected flush failure".into()));
            self.poison(&format!("flush: {e}"));
            Err(Error::Io(e))
        });
        let r = self.db.flush().map(|_| ());
        self.write_result(r)?;
        if let Some(files) = &self.files
            && let Err(e) = files.lock().sync()
        {
            self.poison(&format!("fsync: {e}"));
            return Err(Error::Io(e));
        }
        Ok(())
    }

    /// Notes that every seq below `next` has been written to sled.
    pub(crate) fn note_appended(&self, next: Seq) {
        let mut w = self.written.lock();
        w.next_seq = w.next_seq.max(next.0);
    }

    /// What has been written so far, for the witness.
    pub(crate) fn written(&self) -> WitnessSnapshot {
        let f = self.witness_file.lock();
        WitnessSnapshot {
            witness: self.written.lock().clone(),
            dlq_removed: f.dlq_removed,
        }
    }

    /// Notes that `n` DLQ entries are about to be removed, and first lowers
    /// the witness file's DLQ count by `n`, durably: once the removal is in
    /// sled, sled may write it to its file at any moment (its own flush runs
    /// every 500 ms), and a crash before the flusher's next witness would
    /// leave a file claiming more entries than the store holds, which the
    /// next open refuses as damage.
    ///
    /// # Errors
    /// [`Error::Io`] when the witness cannot be written; the store is
    /// poisoned then, and the caller removes nothing.
    pub(crate) fn note_dlq_removed(&self, n: usize) -> Result<()> {
        let mut f = self.witness_file.lock();
        f.dlq_removed += n as u64;
        {
            let mut w = self.written.lock();
            w.dlq = w.dlq.saturating_sub(n as u64);
        }
        let Some(mut lower) = f.on_disk.clone().filter(|w| w.dlq > 0) else {
            return Ok(());
        };
        lower.dlq = lower.dlq.saturating_sub(n as u64);
        if let Err(e) = self.write_witness_file(&lower) {
            self.poison(&format!("witness file: {e}"));
            return Err(Error::Io(e));
        }
        f.on_disk = Some(lower);
        Ok(())
    }

    /// Records `s` in the witness file (after a flush that covers it), less
    /// the DLQ entries noted as removed since `s` was taken (that flush may
    /// have written their removal too) and the offsets of sinks forgotten
    /// since.
    ///
    /// # Errors
    /// The I/O error of writing the file.
    pub(crate) fn write_witness(&self, s: &WitnessSnapshot) -> std::io::Result<()> {
        let mut f = self.witness_file.lock();
        let mut w = s.witness.clone();
        let removed = f.dlq_removed.saturating_sub(s.dlq_removed);
        w.dlq = w.dlq.saturating_sub(removed);
        // Nor a sink forgotten since.
        let members = self.written.lock();
        w.offsets
            .retain(|sink, _| members.offsets.contains_key(sink));
        drop(members);
        self.write_witness_file(&w)?;
        f.on_disk = Some(w);
        Ok(())
    }

    fn write_witness_file(&self, w: &witness::Witness) -> std::io::Result<()> {
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::witness", |m| Err(std::io::Error::other(
            m.unwrap_or_else(|| "injected witness failure".into())
        )));
        witness::write(&self.path, w)
    }
}

impl Drop for Store {
    /// A last flush, then a witness of everything written, so changes made
    /// without the engine's flusher (the CLI's offline purge and redrive)
    /// are recorded too. A poisoned store is left as it is.
    fn drop(&mut self) {
        if self.inspect || self.poisoned.lock().is_some() {
            return;
        }
        if self.flush().is_ok() {
            let w = self.written();
            if let Err(e) = self.write_witness(&w) {
                tracing::debug!(error = %e, "could not write the witness file");
            }
        }
    }
}

fn decode(k: &[u8], v: &[u8]) -> Result<Batch> {
    let (first, header, entries) = codec::decode_batch(k, v)?;
    Ok(Batch {
        first,
        header,
        entries,
    })
}

impl Store {
    /// Turns the error of a log value that does not decode into one naming
    /// the seqs it takes with it: those its header counts when the header is
    /// sound, else every seq up to the next value's key. Other errors, and
    /// values whose key is not a seq, are returned as they are.
    pub(crate) fn unreadable_value(&self, key: &[u8], value: &[u8], e: Error) -> Error {
        let Error::Corrupted { reason, .. } = &e else {
            return e;
        };
        let Ok(first) = codec::decode_log_key(key) else {
            return e;
        };
        let end = match codec::decode_batch_header(key, value) {
            Ok((f, h)) => Some(Seq(f.0 + u64::from(h.count))),
            Err(_) => self
                .log
                .key_at_or_after(&codec::log_key(first.next()))
                .ok()
                .flatten()
                .and_then(|k| codec::decode_log_key(&k).ok()),
        };
        match end {
            Some(end) => Error::Corrupted {
                tree: codec::tree::LOG,
                key: format!("seqs {first}..{end}"),
                reason: format!(
                    "the value at seq {first} cannot be read ({reason}), and with it no seq up to {end}: records were lost (the store is damaged); see `outbox check` and `outbox salvage`"
                ),
            },
            None => Error::Corrupted {
                tree: codec::tree::LOG,
                key: format!("seqs {first}.."),
                reason: format!(
                    "the last value, at seq {first}, cannot be read ({reason}), nor where it ends: records were lost (the store is damaged); see `outbox check` and `outbox salvage`"
                ),
            },
        }
    }
}

/// The error for seqs no log value covers.
pub(crate) fn missing_range(from: Seq, to: Seq) -> Error {
    Error::Corrupted {
        tree: codec::tree::LOG,
        key: format!("seqs {from}..{to}"),
        reason: "no log value covers these seqs, yet the log must cover every seq from its first value to its head: records were lost (the store is damaged); see `outbox check` and `outbox salvage`".into(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
