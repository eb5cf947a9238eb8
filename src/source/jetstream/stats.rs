//! What the JetStream source counted since it started.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one JetStream source, all monotonic.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Messages received from the consumer (redeliveries included).
    pub received: AtomicU64,
    /// Records appended to the log.
    pub appended: AtomicU64,
    /// Messages whose stream sequence was already in the log (a
    /// redelivery): not appended again, acked once the first copy is done.
    pub duplicates: AtomicU64,
    /// Messages terminated (`Term`): invalid payload, or refused by the
    /// engine (larger than `max_record_bytes`).
    pub terminated: AtomicU64,
    /// Messages handed back (`Nak`) because the outbox was stopping.
    pub nakked: AtomicU64,
    /// Acks confirmed by the server.
    pub acked: AtomicU64,
    /// Ack attempts that failed and were retried.
    pub ack_retries: AtomicU64,
    /// Acks still unconfirmed when the source stopped (JetStream redelivers
    /// those messages; they are not appended again).
    pub ack_abandoned: AtomicU64,
    /// In-progress acks sent.
    pub progress: AtomicU64,
}

impl SourceStats {
    /// `name=value` pairs of every counter, for a log line.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "received={} appended={} duplicates={} terminated={} nakked={} acked={} ack_retries={} ack_abandoned={} progress={}",
            g(&self.received),
            g(&self.appended),
            g(&self.duplicates),
            g(&self.terminated),
            g(&self.nakked),
            g(&self.acked),
            g(&self.ack_retries),
            g(&self.ack_abandoned),
            g(&self.progress),
        )
    }
}
