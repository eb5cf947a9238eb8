//! The status reports: what [`Outbox::status`] returns, read from the
//! shared core without stopping any task.
//!
//! The figures are a snapshot, each read on its own: a sink's `committed`
//! and `lag` are consistent with each other, not with the other sinks'.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::handle::Outbox;
use crate::error::Result;

/// Per-sink figures, as [`Outbox::status`] reports them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    /// The sink.
    pub name: String,
    /// `ok`; `open` or `half_open` (its breaker); `paused` (by an
    /// operator); or `corrupt` once its worker stopped on data it cannot
    /// read.
    pub state: String,
    /// Why the sink is not `ok`: for `corrupt`, the range and the reason.
    pub error: Option<String>,
    /// Its durable committed offset: every seq below it is done.
    pub offset: u64,
    /// Head minus offset.
    pub lag: u64,
    /// DLQ entries.
    pub dlq: usize,
    /// Delivered by this process.
    pub delivered: u64,
    /// Skipped under Drop by this process.
    pub dropped: u64,
    /// Dead-lettered (moved to the DLQ) by this process.
    pub dead_lettered: u64,
    /// Retries made by this process.
    pub retries: u64,
    /// Records the sink's filter passed over, by this process.
    pub filtered: u64,
    /// The sink's filter, as configured, if it has one.
    pub filter: Option<String>,
    /// When an operator paused it (ms since the Unix epoch), while paused.
    pub paused_at_ms: Option<u64>,
    /// When the oldest record it has not passed was appended (ms since the
    /// Unix epoch); `None` when it has caught up.
    pub oldest_pending_ms: Option<u64>,
}

/// An orphaned sink, as [`Outbox::status`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OrphanStatus {
    /// The sink.
    pub name: String,
    /// Its offset: the log is kept from here on for it.
    pub offset: u64,
    /// Since when it is not configured, ms since the Unix epoch.
    pub orphaned_at_ms: u64,
    /// When it will be forgotten (its retention), ms since the Unix epoch.
    pub forget_at_ms: u64,
}

/// What [`Outbox::status`] returns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The log id.
    pub log_id: String,
    /// The next seq to publish.
    pub head: u64,
    /// Configured sinks.
    pub sinks: Vec<SinkStatus>,
    /// Sinks with an offset that are not configured: they hold back
    /// truncation (their backlog is kept) but not acks, until forgotten.
    pub orphans: Vec<OrphanStatus>,
}

impl<T: Send + 'static> Outbox<T> {
    /// Offsets, lag, DLQ counts, sink states and orphans.
    ///
    /// # Errors
    /// None today; typed for the reads a status may need.
    pub fn status(&self) -> Result<Status> {
        let core = &self.core;
        let head = core.head().0;
        let sinks = core
            .sinks
            .iter()
            .map(|s| {
                let committed = s.committed.load(Ordering::Acquire);
                let (state, error) = s.state();
                SinkStatus {
                    name: s.name.to_string(),
                    state: state.to_string(),
                    error,
                    offset: committed,
                    lag: core.lag(s),
                    dlq: core.store.dlq_count(&s.name),
                    delivered: s.delivered.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed),
                    dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
                    retries: s.retries.load(Ordering::Relaxed),
                    filtered: s.filtered.load(Ordering::Relaxed),
                    filter: s.cfg.filter.as_ref().map(|f| f.to_string()),
                    paused_at_ms: *s.paused_at_ms.lock(),
                    oldest_pending_ms: s.oldest.lock().map(|r| r.appended_at_ms),
                }
            })
            .collect();
        let retention = core.cfg.orphan_retention.as_millis() as u64;
        let orphans = core
            .orphans
            .lock()
            .iter()
            .map(|o| OrphanStatus {
                name: o.name.to_string(),
                offset: o.offset.0,
                orphaned_at_ms: o.since_ms,
                forget_at_ms: o.since_ms.saturating_add(retention),
            })
            .collect();
        Ok(Status {
            log_id: core.log_id.simple().to_string(),
            head,
            sinks,
            orphans,
        })
    }

    /// How long the write path may sit in one operation before
    /// [`Outbox::is_healthy`] calls it stalled: the appender in one write to
    /// the store, or the group commit in one flush. Either takes
    /// milliseconds on a healthy disk.
    pub const STALL_AFTER: Duration = Duration::from_secs(30);

    /// Whether every sink can still deliver: false once one stopped on data
    /// it cannot read, the store failed, or the write path has been stalled
    /// for [`Outbox::STALL_AFTER`] ([`Outbox::stalled`] says which). For a
    /// health endpoint.
    pub fn is_healthy(&self) -> bool {
        self.core.store.poisoned().is_none()
            && self.core.sinks.iter().all(|s| s.corrupt.lock().is_none())
            && self.stalled(Self::STALL_AFTER).is_none()
    }

    /// What of the write path has been inside one operation for at least
    /// `longer_than`: the appender in a write to the store, or the group
    /// commit in a flush. A sentence naming each, or `None`.
    ///
    /// Nothing accepted is at risk while the write path is stalled, but
    /// nothing is receipted or delivered either; a process that stays so is
    /// wedged, and a restart (which replays the log) is the remedy. A
    /// supervisor can act on it: `outbox run` answers `/healthz` with 503
    /// and stops feeding systemd's watchdog.
    pub fn stalled(&self, longer_than: Duration) -> Option<String> {
        super::stall::verdict(
            crate::store::monotonic_ms(),
            self.core.appending_since.get(),
            self.core.durability.flushing_since(),
            longer_than,
        )
    }
}
