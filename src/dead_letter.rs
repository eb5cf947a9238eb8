//! [`DeadLetter`]: a dead-lettered delivery as the API shows it, and the
//! DLQ reads that return it, shared by [`crate::Outbox`] and
//! [`crate::inspect`].
//!
//! Invariants:
//! - this file is the only place an on-disk DLQ entry becomes a
//!   [`DeadLetter`]: every public DLQ read goes through [`DeadLetters`];
//! - the delivery id of a dead letter is the one its record was receipted
//!   under (the origin's, for a record redriven from another store), never
//!   one derived from where it sits now.

use uuid::Uuid;

use crate::codec::{Attempt, DlqEntry};
use crate::error::Result;
use crate::store::{DlqPage, Store};
use crate::types::{DeliveryId, Record, Seq, SinkName};

/// One failed delivery attempt, as a dead letter remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedAttempt {
    /// When the attempt began, ms since the Unix epoch.
    pub at_ms: u64,
    /// How long it took, in ms.
    pub latency_ms: u64,
    /// Whether the sink called the failure permanent.
    pub permanent: bool,
    /// What the sink said (for a webhook: the status and the start of the
    /// body, or the transport error).
    pub error: String,
}

/// A record one sink gave up on: dead-lettered, it stays in the sink's DLQ
/// until an operator redrives or purges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The sink that failed.
    pub sink: String,
    /// The seq the record had in the log when it failed (the DLQ key).
    pub seq: Seq,
    /// The delivery id its record was receipted under.
    pub delivery_id: DeliveryId,
    /// The record: payload and headers.
    pub record: Record,
    /// The last error, as text.
    pub error: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub failed_at_ms: u64,
    /// The last attempts (at most ten), oldest first.
    pub history: Vec<FailedAttempt>,
}

impl DeadLetter {
    /// The one conversion from the stored form, given the store's log id.
    fn from_entry(e: DlqEntry, log_id: Uuid) -> DeadLetter {
        let delivery_id = e.delivery_id(log_id);
        DeadLetter {
            sink: e.sink,
            seq: Seq(e.seq),
            delivery_id,
            record: e.record,
            error: e.error,
            attempts: e.attempts,
            failed_at_ms: e.failed_at_ms,
            history: e.history.into_iter().map(FailedAttempt::new).collect(),
        }
    }
}

impl FailedAttempt {
    /// The one conversion from the stored form.
    pub(crate) fn new(a: Attempt) -> FailedAttempt {
        FailedAttempt {
            at_ms: a.at_ms,
            latency_ms: a.latency_ms,
            permanent: a.permanent,
            error: a.error,
        }
    }
}

/// One page of a DLQ listing: see [`crate::Outbox::dlq_page`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterPage {
    /// The entries of the page, in seq order.
    pub entries: Vec<DeadLetter>,
    /// Where the next page starts; `None` once the DLQ is exhausted.
    pub next: Option<Seq>,
}

/// The DLQ of a store, read: every entry comes back as a [`DeadLetter`].
/// [`crate::inspect::Inspector::dead_letters`] hands one out.
#[derive(Clone, Copy)]
pub struct DeadLetters<'a> {
    store: &'a Store,
    log_id: Uuid,
}

impl<'a> DeadLetters<'a> {
    pub(crate) fn new(store: &'a Store, log_id: Uuid) -> DeadLetters<'a> {
        DeadLetters { store, log_id }
    }

    fn convert(&self, e: DlqEntry) -> DeadLetter {
        DeadLetter::from_entry(e, self.log_id)
    }

    /// `keep` over the stored form: it sees each entry converted (a copy,
    /// since the store keeps or drops the entry itself).
    pub(crate) fn keep_stored(
        &self,
        mut keep: impl FnMut(&DeadLetter) -> bool,
    ) -> impl FnMut(&DlqEntry) -> bool {
        let log_id = self.log_id;
        move |e| keep(&DeadLetter::from_entry(e.clone(), log_id))
    }

    /// The entries of one sink (or all sinks), collected in memory.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when an entry does not decode.
    pub fn list(&self, sink: Option<&SinkName>) -> Result<Vec<DeadLetter>> {
        let entries = self.store.dlq_list(sink)?;
        Ok(entries.into_iter().map(|e| self.convert(e)).collect())
    }

    /// Streams the entries of one sink (or all sinks) in key order: one
    /// entry in memory at a time.
    pub fn iter(self, sink: Option<&SinkName>) -> impl Iterator<Item = Result<DeadLetter>> + 'a {
        self.store
            .dlq_iter(sink)
            .map(move |e| e.map(|e| self.convert(e)).map_err(Into::into))
    }

    /// A page of the stored form, converted.
    pub(crate) fn page_of(&self, page: DlqPage) -> DeadLetterPage {
        DeadLetterPage {
            entries: page.entries.into_iter().map(|e| self.convert(e)).collect(),
            next: page.next,
        }
    }

    /// The seqs of the entries of `sink` that `keep` accepts, at most
    /// `limit`, streamed: what a filtered redrive or purge selects.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when an entry does not decode.
    pub fn select(
        &self,
        sink: &SinkName,
        keep: impl FnMut(&DeadLetter) -> bool,
        limit: usize,
    ) -> Result<Vec<Seq>> {
        Ok(self.store.dlq_select(sink, self.keep_stored(keep), limit)?)
    }

    /// The entry of `sink` at `seq`, if any: one point lookup.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when the entry does not decode.
    pub fn get(&self, sink: &SinkName, seq: Seq) -> Result<Option<DeadLetter>> {
        Ok(self.store.dlq_get(sink, seq)?.map(|e| self.convert(e)))
    }

    /// How many entries `sink` has.
    pub fn count(&self, sink: &SinkName) -> usize {
        self.store.dlq_count(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(origin_log: Option<Uuid>) -> DlqEntry {
        DlqEntry {
            sink: "web".into(),
            seq: 12,
            origin: 4,
            origin_log,
            record: Record::new(b"x".to_vec()).with_header("event-type", "a.b"),
            error: "permanent: HTTP 400".into(),
            attempts: 2,
            failed_at_ms: 9,
            history: vec![Attempt {
                at_ms: 8,
                latency_ms: 3,
                permanent: true,
                error: "permanent: HTTP 400".into(),
            }],
        }
    }

    #[test]
    fn the_conversion_keeps_every_field_and_the_receipted_delivery_id() {
        let here = Uuid::from_u128(1);
        let d = DeadLetter::from_entry(entry(None), here);
        assert_eq!(
            d,
            DeadLetter {
                sink: "web".into(),
                seq: Seq(12),
                delivery_id: DeliveryId {
                    log_id: here,
                    seq: Seq(4),
                },
                record: Record::new(b"x".to_vec()).with_header("event-type", "a.b"),
                error: "permanent: HTTP 400".into(),
                attempts: 2,
                failed_at_ms: 9,
                history: vec![FailedAttempt {
                    at_ms: 8,
                    latency_ms: 3,
                    permanent: true,
                    error: "permanent: HTTP 400".into(),
                }],
            }
        );
        // A record redriven from another store keeps that store's id.
        let other = Uuid::from_u128(2);
        let d = DeadLetter::from_entry(entry(Some(other)), here);
        assert_eq!(
            d.delivery_id,
            DeliveryId {
                log_id: other,
                seq: Seq(4),
            }
        );
    }
}
