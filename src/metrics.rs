//! The metrics hook: the engine reports, an embedder decides where it goes.
//!
//! Every method has a no-op default, so an implementation overrides only
//! what it exports, and a method added later breaks no implementation.
//! Calls are made from the engine's tasks and must not block.
//!
//! Per-sink signals meant for alerting (`sink_acked`, `oldest_pending`,
//! `breaker`, `filtered`, `read_failed`) are reported on change. An
//! exporter turns `oldest_pending`'s time into an age when it is read, so
//! the age keeps growing while a stuck sink reports nothing.

use std::time::{Duration, SystemTime};

/// Receives the engine's counters, gauges and latencies.
pub trait MetricsHook: Send + Sync + 'static {
    /// `n` records of `bytes` total were appended to the log.
    fn appended(&self, _n: u64, _bytes: u64) {}
    /// A batch became durable this long after it was handed to the appender.
    fn append_durable(&self, _latency: Duration) {}
    /// A sink delivered `n` records; `latency` is append-to-delivered of the
    /// batch's oldest record.
    fn delivered(&self, _sink: &str, _n: u64, _latency: Duration) {}
    /// A sink retried a delivery.
    fn retried(&self, _sink: &str) {}
    /// A sink dead-lettered `n` records (moved them to the DLQ).
    fn dlq(&self, _sink: &str, _n: u64) {}
    /// A Drop sink skipped `n` records.
    fn dropped(&self, _sink: &str, _n: u64) {}
    /// A sink panicked while delivering.
    fn panicked(&self, _sink: &str) {}
    /// A sink's lag (head minus committed offset) changed.
    fn lag(&self, _sink: &str, _records: u64) {}
    /// `n` ack tokens were released.
    fn acked(&self, _n: u64) {}
    /// Records and bytes in the log after a truncation or append.
    fn log_size(&self, _records: u64, _bytes: u64) {}
    /// A sink's *durable* committed offset moved past `n` more records
    /// (delivered, dead-lettered, skipped, filtered out or passed over): that
    /// sink's share of what [`MetricsHook::acked`] counts globally.
    fn sink_acked(&self, _sink: &str, _n: u64) {}
    /// The oldest record `sink` has not yet passed was appended at
    /// `appended_at` (its batch's append time); `None` once the sink has
    /// caught up. Reported whenever that record changes, including at open.
    fn oldest_pending(&self, _sink: &str, _appended_at: Option<SystemTime>) {}
    /// A sink's breaker changed state (and once at open).
    fn breaker(&self, _sink: &str, _state: BreakerState) {}
    /// A sink's filter passed over `n` records without delivering them.
    fn filtered(&self, _sink: &str, _n: u64) {}
    /// A sink's worker could not read the log at its position (an I/O
    /// error); it stays there and tries again.
    fn read_failed(&self, _sink: &str) {}
    /// A sink's worker stopped on data it cannot read (`corrupt`: a gap in
    /// the log, a bad checksum), naming the range in `reason`. It stays
    /// stopped until the store is repaired.
    fn corrupt(&self, _sink: &str, _reason: &str) {}
    /// A sink's worker passed over `n` seqs of a lost marker: records that
    /// `outbox salvage` could not recover and wrote off. Never silent: the
    /// worker also logs the range.
    fn lost(&self, _sink: &str, _n: u64) {}
}

/// The default hook: ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopMetrics;

impl MetricsHook for NoopMetrics {}

/// The breaker's state, as `status` and the metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Deliveries flow.
    Closed,
    /// Tripped: nothing is sent until the next probe.
    Open,
    /// A probe is in flight; nothing else is sent.
    HalfOpen,
    /// Paused by an operator: nothing is sent, no probes.
    Paused,
}

impl BreakerState {
    /// Every state, in a fixed order (for exporters that show each one).
    pub const ALL: [BreakerState; 4] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::Paused,
    ];

    /// `closed`, `open`, `half_open` or `paused`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Paused => "paused",
        }
    }

    /// A gauge value: 0 closed, 1 open, 2 half-open, 3 paused.
    pub fn code(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::Paused => 3,
        }
    }
}
