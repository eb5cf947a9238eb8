//! The DLQ tree: list, purge, and the atomic half of a redrive.
//!
//! Invariant: a redriven entry is removed from `dlq` in the same sled
//! transaction that appends its record to `log`, so a crash leaves it in
//! exactly one of the two.

use sled::Transactional;

use super::{Batch, Store};
use crate::codec::{self, BatchHeader, DlqEntry, LogEntry};
use crate::error::{Error, Result};
use crate::types::{Seq, SinkName};

impl Store {
    /// DLQ entries of one sink, or of every sink, in key order.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_list(&self, sink: Option<&SinkName>) -> Result<Vec<DlqEntry>> {
        let iter = match sink {
            Some(s) => self.dlq.scan_prefix(codec::dlq_prefix(s)),
            None => self.dlq.iter(),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (k, v) = kv.map_err(Error::from_sled)?;
            out.push(codec::decode_dlq(&k, &v)?);
        }
        Ok(out)
    }

    /// Number of DLQ entries of `sink`.
    pub fn dlq_count(&self, sink: &SinkName) -> usize {
        self.dlq.scan_prefix(codec::dlq_prefix(sink)).count()
    }

    /// Removes DLQ entries of `sink`: those at `seqs`, or all of them.
    /// Returns how many were removed.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn dlq_purge(&self, sink: &SinkName, seqs: Option<&[Seq]>) -> Result<usize> {
        self.check_writable()?;
        let keys: Vec<Vec<u8>> = match seqs {
            Some(seqs) => seqs.iter().map(|s| codec::dlq_key(sink, *s)).collect(),
            None => self
                .dlq
                .scan_prefix(codec::dlq_prefix(sink))
                .keys()
                .filter_map(|k| k.ok().map(|k| k.to_vec()))
                .collect(),
        };
        // Lower the witness's count first: it must never exceed what is durable.
        self.note_dlq_removed(keys.len());
        let mut n = 0;
        for k in keys {
            let r = self.dlq.remove(k);
            if self.write_result(r)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Appends `entries` (already aimed at their sink) as one batch at
    /// `first`, and removes `remove` from the DLQ, in one transaction.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn append_redrive(&self, first: Seq, value: Vec<u8>, remove: &[Vec<u8>]) -> Result<()> {
        self.check_writable()?;
        self.note_dlq_removed(remove.len());
        let key = codec::log_key(first);
        let r = (&self.log, &self.dlq).transaction(|(log, dlq)| {
            log.insert(&key[..], value.as_slice())?;
            for k in remove {
                dlq.remove(k.as_slice())?;
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        });
        match r {
            Ok(()) => Ok(()),
            Err(sled::transaction::TransactionError::Storage(e)) => self.write_result(Err(e)),
            Err(sled::transaction::TransactionError::Abort(())) => {
                Err(Error::Storage("redrive transaction aborted".into()))
            }
        }
    }

    /// Moves the chosen DLQ entries of `sink` (all when `seqs` is `None`)
    /// into the log as one batch at `first`, aimed at that sink only and
    /// keeping their delivery ids, and removes them from the DLQ, in one
    /// transaction. Not durable until the next flush. Returns the appended
    /// batch, or `None` when nothing was chosen.
    ///
    /// # Errors
    /// Storage errors; nothing is moved then.
    pub fn redrive_at(
        &self,
        sink: &SinkName,
        seqs: Option<&[Seq]>,
        first: Seq,
    ) -> Result<Option<Batch>> {
        let chosen: Vec<DlqEntry> = self
            .dlq_list(Some(sink))?
            .into_iter()
            .filter(|e| seqs.is_none_or(|s| s.contains(&Seq(e.seq))))
            .collect();
        if chosen.is_empty() {
            return Ok(None);
        }
        let entries: Vec<LogEntry> = chosen
            .iter()
            .map(|e| LogEntry {
                record: e.record.clone(),
                target: Some(sink.to_string()),
                origin: Some(e.origin),
            })
            .collect();
        let header = BatchHeader {
            count: entries.len() as u32,
            bytes: entries.iter().map(|e| e.record.size() as u64).sum(),
            appended_at_ms: super::now_ms(),
        };
        let remove: Vec<Vec<u8>> = chosen
            .iter()
            .map(|e| codec::dlq_key(sink, Seq(e.seq)))
            .collect();
        self.append_redrive(first, codec::encode_batch(header, &entries), &remove)?;
        Ok(Some(Batch {
            first,
            header,
            entries,
        }))
    }

    /// Offline redrive, for the CLI on a stopped outbox: [`Store::redrive_at`]
    /// at the head, then a flush. Returns the seqs the records were appended
    /// under.
    ///
    /// # Errors
    /// [`Error::UnknownSink`] when `sink` has no offset; storage errors.
    pub fn redrive_offline(&self, sink: &SinkName, seqs: Option<&[Seq]>) -> Result<Vec<Seq>> {
        if self.offset(sink)?.is_none() {
            return Err(Error::UnknownSink(sink.to_string()));
        }
        let first = self.extent()?.next;
        let Some(batch) = self.redrive_at(sink, seqs, first)? else {
            return Ok(Vec::new());
        };
        self.flush()?;
        Ok((first.0..batch.end().0).map(Seq).collect())
    }
}
