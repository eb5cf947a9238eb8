//! The sled store: one `sled::Db` in a data directory, four trees.
//!
//! | tree      | key                                   | value                                   |
//! |-----------|---------------------------------------|-----------------------------------------|
//! | `log`     | BE u64 first seq of a batch           | version, count, bytes, time, entries    |
//! | `offsets` | sink name (UTF-8)                     | version, bincode `OffsetValue`          |
//! | `dlq`     | name length (u8), name, BE u64 seq    | version, bincode `DlqEntry`             |
//! | `meta`    | `format_version`, `log_id`, `created_at_ms`, `seq_floor` | see [`crate::codec`] |
//!
//! Invariants:
//! - the records of a batch keyed `k` with count `n` have seqs `k..k+n`, and
//!   batches never overlap: each key is at least the previous batch's end;
//! - a seq is never assigned twice: the next seq is the larger of the last
//!   batch's end and `meta.seq_floor`, and truncation raises `seq_floor` to
//!   the end of what it removes, durably, before it removes anything;
//! - an offset `o` means every seq below `o` is done for that sink;
//! - after a failed write or flush the store is poisoned and refuses writes
//!   until it is reopened.
//!
//! Storage assumptions: sled's `flush` writes its buffers and calls
//! `sync_file_range`, which survives a process kill (the data is in the page
//! cache) but not a power loss; [`SyncPolicy::Full`](crate::SyncPolicy) adds
//! an `fsync` of sled's files. The byte layout is in `docs/design.md`.

mod compact;
mod dlq;
mod durability;
mod open;
pub mod witness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::codec::{self, BatchHeader, DlqEntry, LogEntry, OffsetValue};
use crate::error::{Error, Result};
use crate::types::{Seq, SinkName};

pub use durability::{Durability, FlushMode, Ticket};
pub use open::{StoreOptions, is_locked};

/// A decoded log batch: its first seq, header and entries.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The seq of `entries[0]`.
    pub first: Seq,
    /// The batch header.
    pub header: BatchHeader,
    /// The records, in seq order.
    pub entries: Vec<LogEntry>,
}

impl Batch {
    /// One past the last seq in the batch.
    pub fn end(&self) -> Seq {
        Seq(self.first.0 + self.entries.len() as u64)
    }
}

/// The store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    db: sled::Db,
    log: sled::Tree,
    offsets: sled::Tree,
    dlq: sled::Tree,
    meta: sled::Tree,
    path: PathBuf,
    log_id: Uuid,
    created_at_ms: u64,
    poisoned: Mutex<Option<String>>,
    /// Serialises offset writers so an offset never goes backwards on disk.
    offset_lock: Mutex<()>,
    /// What has been written to sled (not yet necessarily flushed): the
    /// flusher snapshots it before a flush and records it in the witness
    /// file after (see [`witness`]).
    written: Mutex<witness::Witness>,
}

/// What [`Store::scan_log`] reports about the log's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogExtent {
    /// The first seq still in the log, if any batch is.
    pub first: Option<Seq>,
    /// The next seq to assign.
    pub next: Seq,
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

    /// The lowest seq that may still be assigned (see the module invariants).
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the stored value does not decode.
    pub fn seq_floor(&self) -> Result<Seq> {
        match self
            .meta
            .get(codec::meta_key::SEQ_FLOOR)
            .map_err(Error::from_sled)?
        {
            Some(v) => Ok(Seq(codec::decode_meta_u64(codec::meta_key::SEQ_FLOOR, &v)?)),
            None => Ok(Seq(0)),
        }
    }

    /// The sinks configured at the last open, if recorded.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the stored list does not decode.
    pub fn configured_sinks(&self) -> Result<Option<Vec<SinkName>>> {
        match self
            .meta
            .get(codec::meta_key::SINKS)
            .map_err(Error::from_sled)?
        {
            Some(v) => codec::decode_sink_list(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Records the configured sinks (not durable until the next flush).
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn set_configured_sinks(&self, names: &[SinkName]) -> Result<()> {
        self.check_writable()?;
        let list: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let r = self
            .meta
            .insert(codec::meta_key::SINKS, codec::encode_sink_list(&list))
            .map(|_| ());
        self.write_result(r)
    }

    /// The first seq in the log and the next seq to assign.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the first or last batch does not decode.
    pub fn extent(&self) -> Result<LogExtent> {
        let floor = self.seq_floor()?;
        let first = match self.log.first().map_err(Error::from_sled)? {
            Some((k, _)) => Some(codec::decode_log_key(&k)?),
            None => None,
        };
        let end = match self.log.last().map_err(Error::from_sled)? {
            Some((k, v)) => {
                let (first, h) = codec::decode_batch_header(&k, &v)?;
                Seq(first.0 + u64::from(h.count))
            }
            None => Seq(0),
        };
        Ok(LogExtent {
            first,
            next: end.max(floor),
        })
    }

    fn check_writable(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Marks the store failed after a write or flush error.
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

    fn write_result<T>(&self, r: std::result::Result<T, sled::Error>) -> Result<T> {
        r.map_err(|e| {
            let e = Error::from_sled(e);
            self.poison(&e.to_string());
            e
        })
    }

    /// Inserts one encoded batch. Not durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier failure; [`Error::Io`] (and the
    /// store is poisoned) when sled fails.
    pub fn append(&self, first: Seq, value: Vec<u8>) -> Result<()> {
        self.check_writable()?;
        let r = self.log.insert(codec::log_key(first), value).map(|_| ());
        self.write_result(r)
    }

    /// Inserts encoded batches. Those whose indexes fall in one of
    /// `atomic` go in one sled batch, so after a crash either all of a run is
    /// there or none; the others are plain inserts. Not durable until the
    /// next flush.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn append_runs(
        &self,
        values: Vec<(Seq, Vec<u8>)>,
        atomic: &[std::ops::Range<usize>],
    ) -> Result<()> {
        self.check_writable()?;
        let mut batch: Option<sled::Batch> = None;
        for (i, (first, value)) in values.into_iter().enumerate() {
            let in_run = atomic.iter().find(|r| r.contains(&i));
            match in_run {
                None => self.append(first, value)?,
                Some(run) => {
                    batch
                        .get_or_insert_with(sled::Batch::default)
                        .insert(&codec::log_key(first), value);
                    if i + 1 == run.end {
                        if let Some(b) = batch.take() {
                            let r = self.log.apply_batch(b);
                            self.write_result(r)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the batch holding `seq`, or the first batch after it.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the batch does not decode.
    pub fn read_from(&self, seq: Seq) -> Result<Option<Batch>> {
        let key = codec::log_key(seq);
        if let Some((k, v)) = self
            .log
            .range(..=key)
            .next_back()
            .transpose()
            .map_err(Error::from_sled)?
        {
            let (first, h) = codec::decode_batch_header(&k, &v)?;
            if first.0 + u64::from(h.count) > seq.0 {
                return decode(&k, &v).map(Some);
            }
        }
        match self
            .log
            .range(key..)
            .next()
            .transpose()
            .map_err(Error::from_sled)?
        {
            Some((k, v)) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every batch header in the log, in seq order, without decoding the
    /// records.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a key or header does not decode.
    pub fn batch_headers(&self) -> Result<Vec<(Seq, BatchHeader)>> {
        let mut out = Vec::new();
        for kv in self.log.iter() {
            let (k, v) = kv.map_err(Error::from_sled)?;
            out.push(codec::decode_batch_header(&k, &v)?);
        }
        Ok(out)
    }

    /// Iterates decoded batches starting with the one holding `from`.
    pub fn iter_batches(&self, from: Seq) -> impl Iterator<Item = Result<Batch>> + '_ {
        let start = match self.log.range(..=codec::log_key(from)).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            _ => codec::log_key(from).to_vec(),
        };
        self.log.range(start..).map(|kv| {
            let (k, v) = kv.map_err(Error::from_sled)?;
            decode(&k, &v)
        })
    }

    /// Raw log iteration for `check`: every key and value, undecoded.
    pub fn raw(
        &self,
        tree: &str,
    ) -> Option<impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_> {
        let t = match tree {
            codec::tree::LOG => &self.log,
            codec::tree::OFFSETS => &self.offsets,
            codec::tree::DLQ => &self.dlq,
            codec::tree::META => &self.meta,
            _ => return None,
        };
        Some(t.iter().map(|kv| kv.map_err(Error::from_sled)))
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

    /// Writes `sink`'s offset as `next` (never lower than what is stored) and
    /// inserts `dlq` entries, all in one sled transaction. Returns the offset
    /// now stored. Not durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`], or [`Error::Io`] (and the store is poisoned).
    pub fn commit_offset(&self, sink: &SinkName, next: Seq, dlq: &[DlqEntry]) -> Result<Seq> {
        use sled::Transactional;
        self.check_writable()?;
        let _g = self.offset_lock.lock();
        let key = sink.as_str().as_bytes();
        // `written` holds every sink's last written offset (loaded at open,
        // updated here under the lock), so no sled read is needed.
        let stored = self.written.lock().offsets.get(sink.as_str()).copied();
        let next = next.0.max(stored.unwrap_or(0));
        let value = codec::encode_offset(&OffsetValue {
            next,
            updated_at_ms: now_ms(),
        });
        if dlq.is_empty() {
            if stored != Some(next) {
                let r = self.offsets.insert(key, value).map(|_| ());
                self.write_result(r)?;
            }
            self.written.lock().offsets.insert(sink.to_string(), next);
            return Ok(Seq(next));
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = dlq
            .iter()
            .map(|e| {
                let name = SinkName::new(e.sink.clone()).unwrap_or_else(|_| sink.clone());
                (codec::dlq_key(&name, Seq(e.seq)), codec::encode_dlq(e))
            })
            .collect();
        let parked = encoded.len() as u64;
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
                w.offsets.insert(sink.to_string(), next);
                w.dlq += parked;
                Ok(Seq(next))
            }
            Err(sled::transaction::TransactionError::Storage(e)) => self.write_result(Err(e)),
            Err(sled::transaction::TransactionError::Abort(())) => {
                Err(Error::Storage("offset transaction aborted".into()))
            }
        }
    }

    /// Removes a sink's offset (an orphan the operator forgets).
    ///
    /// # Errors
    /// [`Error::Poisoned`], or [`Error::Io`].
    pub fn forget_offset(&self, sink: &SinkName) -> Result<bool> {
        self.check_writable()?;
        let r = self
            .offsets
            .remove(sink.as_str().as_bytes())
            .map(|o| o.is_some());
        self.write_result(r)
    }

    /// Removes whole batches that end at or below `below`, up to `max`
    /// batches. First raises `seq_floor` to the end of the last batch removed
    /// and flushes, so a seq is never reused even if every batch goes.
    /// Returns the records and bytes removed.
    ///
    /// # Errors
    /// [`Error::Corrupted`] on an undecodable header; I/O errors poison.
    pub fn truncate_below(&self, below: Seq, max: usize) -> Result<(u64, u64)> {
        self.check_writable()?;
        let mut keys = Vec::new();
        let mut end = 0u64;
        let mut records = 0u64;
        let mut bytes = 0u64;
        for kv in self.log.iter() {
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
            bytes += h.bytes;
        }
        if keys.is_empty() {
            return Ok((0, 0));
        }
        if self.seq_floor()?.0 < end {
            let r = self
                .meta
                .insert(codec::meta_key::SEQ_FLOOR, codec::encode_meta_u64(end))
                .map(|_| ());
            self.write_result(r)?;
            let r = self.db.flush().map(|_| ());
            self.write_result(r)?;
        }
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        let r = self.log.apply_batch(batch);
        self.write_result(r)?;
        Ok((records, bytes))
    }

    /// sled's flush: buffers written and `sync_file_range`d.
    ///
    /// # Errors
    /// [`Error::Io`]; the store is poisoned.
    pub fn flush(&self) -> Result<()> {
        self.check_writable()?;
        let r = self.db.flush().map(|_| ());
        self.write_result(r)
    }

    /// Notes that every seq below `next` has been written to sled.
    pub(crate) fn note_appended(&self, next: Seq) {
        let mut w = self.written.lock();
        w.next_seq = w.next_seq.max(next.0);
    }

    /// What has been written so far, for the witness.
    pub(crate) fn written(&self) -> witness::Witness {
        self.written.lock().clone()
    }

    /// Notes that `n` DLQ entries are being removed (before the removal is
    /// durable, so the witness stays a lower bound).
    pub(crate) fn note_dlq_removed(&self, n: usize) {
        let mut w = self.written.lock();
        w.dlq = w.dlq.saturating_sub(n as u64);
    }

    /// Records `w` in the witness file (after a flush that covers it).
    ///
    /// # Errors
    /// The I/O error of writing the file.
    pub(crate) fn write_witness(&self, w: &witness::Witness) -> std::io::Result<()> {
        witness::write(&self.path, w)
    }

    /// Bytes sled reports on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Drop for Store {
    /// A last flush, then a witness of everything written, so changes made
    /// without the engine's flusher (the CLI's offline purge and redrive)
    /// are recorded too.
    fn drop(&mut self) {
        if self.poisoned.lock().is_some() {
            return;
        }
        if self.db.flush().is_ok() {
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shared handle.
pub type SharedStore = Arc<Store>;
