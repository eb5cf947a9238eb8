//! The DLQ tree: streaming list, purge, and the atomic half of a redrive.
//!
//! Invariants:
//! - a redriven entry is removed from `dlq` in the same sled transaction
//!   that appends its record to `log`, so a crash leaves it in exactly one
//!   of the two;
//! - a redrive is cut into chunks of at most [`REDRIVE_CHUNK_BYTES`] of
//!   records and [`REDRIVE_CHUNK_ENTRIES`] entries (or one record, if
//!   larger); each chunk is packed into log values
//!   of bounded size and written, with its DLQ removals, as one transaction.
//!   Nothing is ever encoded larger than a reader accepts, and memory stays
//!   bounded by a chunk however large the DLQ;
//! - listing and counting stream the tree; nothing loads the whole DLQ.

use sled::Transactional;

use super::{Batch, Store};
use crate::codec::{self, BatchHeader, DlqEntry, LogEntry};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::{Seq, SinkName};

/// Most record bytes moved by one redrive transaction.
pub const REDRIVE_CHUNK_BYTES: u64 = 32 << 20;

/// Bytes a log entry takes besides its record and target: origin, origin
/// log id and lengths, rounded up.
const ENTRY_FRAMING: usize = 40;

/// Most entries moved by one redrive transaction: small records are bounded
/// by their count, since each costs more in a sled transaction and in
/// memory than its bytes say.
pub const REDRIVE_CHUNK_ENTRIES: usize = 4096;

/// One page of a DLQ listing: see [`Store::dlq_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqPage {
    /// The entries of the page, in seq order.
    pub entries: Vec<DlqEntry>,
    /// Where the next page starts; `None` once the DLQ is exhausted.
    pub next: Option<Seq>,
}

/// Which DLQ entries of one sink a redrive or purge takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every entry.
    All,
    /// The entries at these seqs (absent ones are ignored).
    Seqs(Vec<Seq>),
}

impl Selection {
    fn keys<'a>(
        &'a self,
        store: &'a Store,
        sink: &'a SinkName,
        after: Option<Seq>,
    ) -> Box<dyn Iterator<Item = Result<(sled::IVec, sled::IVec)>> + 'a> {
        match self {
            Selection::All => {
                let prefix = codec::dlq_prefix(sink);
                let mut end = prefix.clone();
                end.extend_from_slice(&u64::MAX.to_be_bytes());
                let iter: Box<dyn Iterator<Item = _>> = match after.map(|a| a.0.checked_add(1)) {
                    None => Box::new(store.dlq.scan_prefix(prefix)),
                    Some(Some(from)) => {
                        Box::new(store.dlq.range(codec::dlq_key(sink, Seq(from))..=end))
                    }
                    Some(None) => Box::new(std::iter::empty()),
                };
                Box::new(iter.map(|kv| kv.map_err(Error::from_sled)))
            }
            Selection::Seqs(seqs) => {
                let mut seqs = seqs.clone();
                seqs.sort_unstable();
                seqs.dedup();
                Box::new(
                    seqs.into_iter()
                        .filter(move |s| after.is_none_or(|a| *s > a))
                        .filter_map(move |s| {
                            let key = codec::dlq_key(sink, s);
                            match store.dlq.get(&key) {
                                Ok(Some(v)) => Some(Ok((sled::IVec::from(key), v))),
                                Ok(None) => None,
                                Err(e) => Some(Err(Error::from_sled(e))),
                            }
                        }),
                )
            }
        }
    }
}

/// One redrive transaction's result.
#[derive(Debug)]
pub struct RedriveChunk {
    /// The values appended, in seq order.
    pub batches: Vec<Batch>,
    /// How many DLQ entries moved.
    pub moved: usize,
    /// The DLQ seq of the last entry moved: the next chunk starts after it.
    pub cursor: Seq,
}

impl Store {
    /// Streams the DLQ entries of one sink, or of every sink, in key order.
    pub fn dlq_iter<'a>(
        &'a self,
        sink: Option<&SinkName>,
    ) -> impl Iterator<Item = Result<DlqEntry>> + 'a {
        let iter = match sink {
            Some(s) => self.dlq.scan_prefix(codec::dlq_prefix(s)),
            None => self.dlq.iter(),
        };
        iter.map(|kv| {
            let (k, v) = kv.map_err(Error::from_sled)?;
            codec::decode_dlq(&k, &v)
        })
    }

    /// Streams the DLQ entries of `sink` at or after seq `from`, in seq
    /// order: the cursor of a paged listing.
    pub fn dlq_iter_from<'a>(
        &'a self,
        sink: &SinkName,
        from: Seq,
    ) -> impl Iterator<Item = Result<DlqEntry>> + 'a {
        let prefix = codec::dlq_prefix(sink);
        self.dlq
            .range(codec::dlq_key(sink, from)..)
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|kv| {
                let (k, v) = kv.map_err(Error::from_sled)?;
                codec::decode_dlq(&k, &v)
            })
    }

    /// One page of the DLQ of `sink`: the entries at or after `from` that
    /// `keep` accepts, in seq order, until `max_entries` are taken or their
    /// records reach `max_bytes` (a page holds at least one entry, however
    /// large). `next` is where the following page starts, or `None` when
    /// the scan reached the end.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_page(
        &self,
        sink: &SinkName,
        from: Seq,
        mut keep: impl FnMut(&DlqEntry) -> bool,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<DlqPage> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for e in self.dlq_iter_from(sink, from) {
            let e = e?;
            if entries.len() >= max_entries.max(1) || (!entries.is_empty() && bytes >= max_bytes) {
                return Ok(DlqPage {
                    entries,
                    next: Some(Seq(e.seq)),
                });
            }
            if keep(&e) {
                bytes += e.record.payload.len();
                entries.push(e);
            }
        }
        Ok(DlqPage {
            entries,
            next: None,
        })
    }

    /// The seqs of the DLQ entries of `sink` that `keep` accepts, in order,
    /// at most `limit` of them: what a redrive or purge selects, held as
    /// seqs only, never as records.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_select(
        &self,
        sink: &SinkName,
        mut keep: impl FnMut(&DlqEntry) -> bool,
        limit: usize,
    ) -> Result<Vec<Seq>> {
        let mut out = Vec::new();
        for e in self.dlq_iter(Some(sink)) {
            if out.len() >= limit {
                break;
            }
            let e = e?;
            if keep(&e) {
                out.push(Seq(e.seq));
            }
        }
        Ok(out)
    }

    /// The DLQ entry of `sink` at `seq`, if there is one: one point lookup.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the entry does not decode.
    pub fn dlq_get(&self, sink: &SinkName, seq: Seq) -> Result<Option<DlqEntry>> {
        let key = codec::dlq_key(sink, seq);
        match self.dlq.get(&key).map_err(Error::from_sled)? {
            Some(v) => codec::decode_dlq(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// DLQ entries of one sink, or of every sink, in key order, collected.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_list(&self, sink: Option<&SinkName>) -> Result<Vec<DlqEntry>> {
        self.dlq_iter(sink).collect()
    }

    /// Number of DLQ entries of `sink`.
    pub fn dlq_count(&self, sink: &SinkName) -> usize {
        self.dlq.scan_prefix(codec::dlq_prefix(sink)).count()
    }

    /// Removes the selected DLQ entries of `sink`. Returns how many were
    /// removed. Not durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn dlq_purge(&self, sink: &SinkName, which: &Selection) -> Result<usize> {
        self.check_writable()?;
        let mut n = 0;
        loop {
            // Keys are gathered a bounded batch at a time, so purging a
            // million entries never holds them all.
            let keys: Vec<sled::IVec> = which
                .keys(self, sink, None)
                .take(4096)
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<Result<_>>()?;
            if keys.is_empty() {
                return Ok(n);
            }
            // Lower the witness's count first: it must never exceed what is
            // durable.
            self.note_dlq_removed(keys.len())?;
            // One removal at a time, not a sled batch (whose pinned log can
            // hang, `store::intent`): a purge cut by a crash is a smaller
            // purge, which the witness's lowered count already allows.
            for k in &keys {
                let r = self.dlq.remove(k.as_ref()).map(|_| ());
                self.write_result(r)?;
            }
            n += keys.len();
            if matches!(which, Selection::Seqs(_)) {
                return Ok(n);
            }
        }
    }

    /// Moves the next chunk of the selected DLQ entries of `sink` (those
    /// after `after`) into the log at `first`, aimed at that sink only and
    /// keeping their delivery ids, and removes them from the DLQ, in one
    /// transaction. Values hold whole records, at most `value_bytes` each
    /// (one record, if larger). Not durable until the next flush. Returns
    /// `None` when nothing is left.
    ///
    /// # Errors
    /// Storage errors, or an entry that does not decode; nothing is moved
    /// then.
    pub fn redrive_chunk(
        &self,
        sink: &SinkName,
        which: &Selection,
        after: Option<Seq>,
        first: Seq,
        value_bytes: usize,
    ) -> Result<Option<RedriveChunk>> {
        self.check_writable()?;
        let mut remove = Vec::new();
        let mut bytes = 0u64;
        let mut cursor = None;
        let mut values: Vec<Vec<LogEntry>> = vec![Vec::new()];
        let mut value_size = 0u64;
        for kv in which.keys(self, sink, after) {
            let (k, v) = kv?;
            let e = codec::decode_dlq(&k, &v)?;
            // What the entry adds to a value: the record, its target and its
            // origin, plus framing.
            let size = (e.record.size() + sink.as_str().len() + ENTRY_FRAMING) as u64;
            if !remove.is_empty()
                && (bytes + size > REDRIVE_CHUNK_BYTES || remove.len() >= REDRIVE_CHUNK_ENTRIES)
            {
                break;
            }
            if value_size > 0 && value_size + size > value_bytes as u64 {
                values.push(Vec::new());
                value_size = 0;
            }
            bytes += size;
            value_size += size;
            cursor = Some(Seq(e.seq));
            if let Some(v) = values.last_mut() {
                v.push(LogEntry {
                    record: e.record,
                    target: Some(sink.to_string()),
                    origin: Some(e.origin),
                    origin_log: e.origin_log,
                });
            }
            remove.push(k);
        }
        let Some(cursor) = cursor else {
            return Ok(None);
        };
        let at = super::now_ms();
        let mut next = first;
        let mut batches = Vec::with_capacity(values.len());
        let mut encoded = Vec::with_capacity(values.len());
        for entries in values {
            let header = BatchHeader::records(&entries, at);
            encoded.push((
                codec::log_key(next),
                codec::encode_batch(next, header, &entries)?,
            ));
            let b = Batch {
                first: next,
                header,
                entries,
            };
            next = b.end();
            batches.push(b);
        }
        self.note_dlq_removed(remove.len())?;
        let gen_for = self.log.for_append(
            first,
            encoded.len() as u64,
            encoded.iter().map(|(_, v)| v.len() as u64).sum(),
        );
        let gen_for = self.write_result(gen_for)?;
        let r = (&gen_for.tree, &self.dlq).transaction(|(log, dlq)| {
            for (k, v) in &encoded {
                log.insert(&k[..], v.as_slice())?;
            }
            for k in &remove {
                dlq.remove(k.as_ref())?;
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        });
        match r {
            Ok(()) => {}
            Err(sled::transaction::TransactionError::Storage(e)) => {
                return self.write_result(Err(e));
            }
            Err(sled::transaction::TransactionError::Abort(())) => {
                return Err(Error::Storage("redrive transaction aborted".into()));
            }
        }
        self.note_appended(next);
        Ok(Some(RedriveChunk {
            batches,
            moved: remove.len(),
            cursor,
        }))
    }
}

impl Store {
    /// Offline redrive, for the CLI on a stopped outbox: every chunk of
    /// [`Store::redrive_chunk`] at the head (after a hole for seqs reserved
    /// by the last run), then a durable flush. Returns the seqs the records
    /// were appended under.
    ///
    /// # Errors
    /// [`crate::ConfigError::UnknownSink`] when `sink` has no offset; store
    /// errors.
    pub fn redrive_offline(
        &self,
        sink: &SinkName,
        which: &Selection,
        value_bytes: usize,
    ) -> crate::Result<Vec<Seq>> {
        if self.offset(sink)?.is_none() {
            return Err(crate::ConfigError::UnknownSink(sink.to_string()).into());
        }
        let verified = self.verify()?;
        if verified.next > verified.extent.end {
            self.write_marker(codec::BatchKind::Hole, verified.extent.end, verified.next)?;
        }
        let start = verified.next;
        let mut next = start;
        let mut after = None;
        while let Some(chunk) = self.redrive_chunk(sink, which, after, next, value_bytes)? {
            after = Some(chunk.cursor);
            if let Some(b) = chunk.batches.last() {
                next = b.end();
            }
            // Each chunk is durable before the next one starts.
            self.flush()?;
        }
        Ok((start.0..next.0).map(Seq).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use crate::store::{StoreOptions, witness};

    fn entry(seq: u64) -> DlqEntry {
        DlqEntry {
            sink: "a".into(),
            seq,
            origin: seq,
            origin_log: None,
            record: Record::new(format!("r{seq}").into_bytes()),
            error: "no".into(),
            attempts: 1,
            failed_at_ms: 0,
            history: Vec::new(),
        }
    }

    fn witnessed_dlq(store: &Store) -> u64 {
        witness::read(store.path()).unwrap().unwrap().dlq
    }

    /// sled may write a removal to its file at any moment, so the witness
    /// file must not claim the removed entries even before the next flush:
    /// a SIGKILL then would leave a store its next open refuses as damaged
    /// (found by `tests/model_crash.rs`).
    #[test]
    fn purge_and_redrive_lower_the_witness_file_before_they_remove() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(d.path().join("data"), &StoreOptions::default()).unwrap();
        let a = SinkName::new("a").unwrap();
        store
            .commit_offset(&a, Seq(4), &[entry(0), entry(1), entry(2), entry(3)])
            .unwrap();
        store.flush().unwrap();
        let before = store.written();
        store.write_witness(&before).unwrap();
        assert_eq!(witnessed_dlq(&store), 4);

        assert_eq!(
            store.dlq_purge(&a, &Selection::Seqs(vec![Seq(1)])).unwrap(),
            1
        );
        assert_eq!(witnessed_dlq(&store), 3, "lowered before any flush");
        let chunk = store
            .redrive_chunk(
                &a,
                &Selection::Seqs(vec![Seq(0), Seq(3)]),
                None,
                Seq(4),
                1 << 20,
            )
            .unwrap()
            .unwrap();
        assert_eq!(chunk.moved, 2);
        assert_eq!(witnessed_dlq(&store), 1, "lowered before any flush");
        assert_eq!(store.dlq_count(&a), 1);

        // A flusher that read `written` before the removals, and writes its
        // witness after a flush that may already hold them, writes 1, not 4.
        store.write_witness(&before).unwrap();
        assert_eq!(witnessed_dlq(&store), 1);
    }
}
