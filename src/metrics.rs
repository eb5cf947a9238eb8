//! The metrics hook: the engine reports, an embedder decides where it goes.
//!
//! Every method has a no-op default, so an implementation overrides only
//! what it exports. Calls are made from the engine's tasks and must not
//! block.

use std::time::Duration;

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
    /// A sink parked `n` records in the DLQ.
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
}

/// The default hook: ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopMetrics;

impl MetricsHook for NoopMetrics {}
