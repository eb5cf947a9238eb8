//! [`LogRecord`]: a record of the log as the API shows it, and the one
//! read that flattens stored values into them, shared by
//! [`crate::Outbox::read_log`] and [`crate::inspect::Inspector::records`].
//!
//! Invariant: records come out in seq order, each with the delivery id it
//! was receipted under; a value that does not decode ends the read with
//! its error, never skipped.

use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;
use crate::types::{DeliveryId, Record, Seq};

/// One record as [`crate::Outbox::read_log`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its seq.
    pub seq: Seq,
    /// Its delivery id (the origin's, for a redriven record).
    pub delivery_id: DeliveryId,
    /// When its batch was appended, ms since the Unix epoch.
    pub appended_at_ms: u64,
    /// The only sink that delivers it, for a redriven record.
    pub target: Option<String>,
    /// The record.
    pub record: Record,
}

/// The records of `store` at or after `from`, in seq order (holes and lost
/// markers hold none).
pub(crate) fn records(
    store: &Store,
    log_id: Uuid,
    from: Seq,
) -> impl Iterator<Item = Result<LogRecord>> + '_ {
    store.iter_batches(from).flat_map(move |batch| {
        let (batch, err) = match batch {
            Ok(b) => (Some(b), None),
            Err(e) => (None, Some(Err(e.into()))),
        };
        let recs = batch.into_iter().flat_map(move |batch| {
            let at = batch.header.appended_at_ms;
            let first = batch.first;
            batch
                .entries
                .into_iter()
                .enumerate()
                .filter_map(move |(i, e)| {
                    let seq = Seq(first.0 + i as u64);
                    (seq >= from).then(|| {
                        Ok(LogRecord {
                            seq,
                            delivery_id: e.delivery_id(seq, log_id),
                            appended_at_ms: at,
                            target: e.target,
                            record: e.record,
                        })
                    })
                })
        });
        err.into_iter().chain(recs)
    })
}
