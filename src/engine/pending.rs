//! The per-sink alerting signals reported as a sink's durable offset moves:
//! how many records it passed (`sink_acked`) and the append time of the
//! oldest record it has not passed (`oldest_pending`).
//!
//! Records carry no time of their own: the time is their log value's
//! `appended_at_ms`, written once per group commit, so every record of a
//! value shares it (they were appended within one flush of each other).
//!
//! Invariants:
//! - `oldest_pending` is reported at open, and after that only when the
//!   value holding the sink's offset changes or the sink catches up
//!   (`None`) or falls behind again; the exporter turns the time into an
//!   age when it is read, so a stuck sink's age grows with no report;
//! - the value is found in the tail cache, else by reading log headers
//!   (never records) from the offset on, passing over holes and lost
//!   markers; a read error leaves the last report standing.

use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use super::core::{Core, SinkSlot};
use crate::codec::BatchKind;
use crate::store::RecordsAt;
use crate::types::Seq;

/// Reports that `slot`'s durable offset moved from `before` to `after`.
pub(crate) fn acked<T>(core: &Core<T>, slot: &SinkSlot, before: Seq, after: Seq) {
    if after > before {
        let n = core.holes.lock().records(before, after);
        if n > 0 {
            core.metrics.sink_acked(slot.name.as_str(), n);
        }
    }
}

/// Reports `slot`'s oldest pending record if it changed. `force` reports
/// it even when it did not (at open).
pub(crate) fn oldest<T>(core: &Core<T>, slot: &SinkSlot, force: bool) {
    let committed = Seq(slot.committed.load(Ordering::Acquire));
    let mut last = slot.oldest.lock();
    if core.lag(slot) == 0 {
        if last.take().is_some() || force {
            core.metrics.oldest_pending(slot.name.as_str(), None);
        }
        return;
    }
    if !force && last.is_some_and(|r| r.first <= committed && committed < r.end) {
        return;
    }
    let cached = core
        .tail
        .lock()
        .get(committed)
        .filter(|b| b.header.kind == BatchKind::Records)
        .map(|b| RecordsAt {
            first: b.first,
            end: b.end(),
            appended_at_ms: b.header.appended_at_ms,
        });
    let found = match cached {
        Some(r) => Some(r),
        None => match core.store.records_at(committed) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(sink = %slot.name, error = %e, "cannot read the oldest pending record's time");
                return;
            }
        },
    };
    if found == *last && !force {
        return;
    }
    *last = found;
    let at = found.map(|r| UNIX_EPOCH + Duration::from_millis(r.appended_at_ms));
    core.metrics.oldest_pending(slot.name.as_str(), at);
}
