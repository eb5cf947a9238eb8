//! [`Retrying`]: a record a sink is retrying, as the API shows it, and the
//! one read that returns it, shared by [`crate::Outbox::retrying`] and
//! [`crate::inspect::Inspector::retrying`].
//!
//! Invariant: only states at or above the sink's durable offset are shown.
//! A state below it is stale (the offset passed the record; its removal may
//! not have happened yet) and is never read, by the worker or here.

use crate::dead_letter::FailedAttempt;
use crate::error::Result;
use crate::store::Store;
use crate::types::{Seq, SinkName};

/// A record a sink has failed to deliver and will try again: its stored
/// retry state, which a restart resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retrying {
    /// The record's seq.
    pub seq: Seq,
    /// Attempts made so far.
    pub attempts: u32,
    /// Of those, the ones that count toward the retry schedule and
    /// `retry_max` (made while the sink's breaker was closed).
    pub counted: u32,
    /// When the next attempt is due, ms since the Unix epoch.
    pub next_at_ms: u64,
    /// The last attempts, oldest first: what a dead letter would keep.
    pub history: Vec<FailedAttempt>,
}

/// `sink`'s records in retry, by seq: the states at or above its durable
/// offset (all of them when it has none).
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when an offset, key or state does not
/// decode.
pub(crate) fn read(store: &Store, sink: &SinkName) -> Result<Vec<Retrying>> {
    let from = store.offset(sink)?.map_or(Seq(0), |o| Seq(o.offset));
    Ok(store
        .retry_states(sink, from)?
        .into_iter()
        .map(|(seq, s)| Retrying {
            seq,
            attempts: s.attempts,
            counted: s.counted,
            next_at_ms: s.next_at_ms,
            history: s.history.into_iter().map(FailedAttempt::new).collect(),
        })
        .collect())
}
