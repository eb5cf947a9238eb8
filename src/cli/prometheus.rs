//! The daemon's [`MetricsHook`]: the `metrics` facade with the Prometheus
//! exporter's recorder, rendered by `GET /metrics`.
//!
//! Metric names (all prefixed `outbox_`) are listed in
//! `docs/operations.md`. Per-sink series carry a `sink` label; sink names
//! are validated (`[A-Za-z0-9_.-]`), so they are safe as label values.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use outbox::{Error, MetricsHook, Result, Status};

/// Latency buckets, in seconds: 0.5 ms to 60 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the global recorder and describes every metric.
///
/// # Errors
/// [`Error::Storage`] when a recorder is already installed.
pub fn install() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| Error::Storage(format!("metrics recorder: {e}")))?;
    describe_counter!(
        "outbox_appended_records_total",
        Unit::Count,
        "Records appended to the log."
    );
    describe_counter!(
        "outbox_appended_bytes_total",
        Unit::Bytes,
        "Payload and header bytes appended to the log."
    );
    describe_counter!(
        "outbox_sink_appended_records_total",
        Unit::Count,
        "Records appended to the log for this sink to deliver."
    );
    describe_counter!(
        "outbox_delivered_total",
        Unit::Count,
        "Records delivered and committed by the sink."
    );
    describe_counter!(
        "outbox_retries_total",
        Unit::Count,
        "Delivery retries (including failed sink commits)."
    );
    describe_counter!(
        "outbox_dlq_total",
        Unit::Count,
        "Records parked in the DLQ."
    );
    describe_counter!(
        "outbox_dropped_total",
        Unit::Count,
        "Records skipped under on_full = drop."
    );
    describe_counter!(
        "outbox_panics_total",
        Unit::Count,
        "Sink panics caught while delivering."
    );
    describe_counter!("outbox_acked_total", Unit::Count, "Ack tokens released.");
    describe_gauge!(
        "outbox_lag_records",
        Unit::Count,
        "Head minus the sink's durable committed offset."
    );
    describe_gauge!(
        "outbox_dlq_entries",
        Unit::Count,
        "DLQ entries of the sink now."
    );
    describe_gauge!(
        "outbox_head_seq",
        Unit::Count,
        "The next seq to be published."
    );
    describe_gauge!(
        "outbox_log_records",
        Unit::Count,
        "Records in the log, as last reported by the engine."
    );
    describe_gauge!(
        "outbox_log_bytes",
        Unit::Bytes,
        "Bytes in the log, as last reported by the engine."
    );
    describe_histogram!(
        "outbox_append_durable_seconds",
        Unit::Seconds,
        "From dispatch to durable (flush covering the batch)."
    );
    describe_histogram!(
        "outbox_append_to_delivered_seconds",
        Unit::Seconds,
        "From append to delivered, per delivered run, for its oldest record."
    );
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("outbox-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(Error::Io)?;
    Ok(handle)
}

/// Feeds the engine's reports into the recorder.
pub struct PromHook {
    sinks: Vec<String>,
}

impl PromHook {
    /// A hook for these sinks; their series start at zero so they show up
    /// before the first event.
    pub fn new(sinks: Vec<String>) -> Arc<PromHook> {
        for s in &sinks {
            for name in [
                "outbox_sink_appended_records_total",
                "outbox_delivered_total",
                "outbox_retries_total",
                "outbox_dlq_total",
                "outbox_dropped_total",
                "outbox_panics_total",
            ] {
                counter!(name, "sink" => s.clone()).absolute(0);
            }
        }
        counter!("outbox_acked_total").absolute(0);
        counter!("outbox_appended_records_total").absolute(0);
        counter!("outbox_appended_bytes_total").absolute(0);
        Arc::new(PromHook { sinks })
    }

    /// Sets the gauges that are cheapest to read at scrape time.
    pub fn refresh(status: &Status) {
        gauge!("outbox_head_seq").set(status.head as f64);
        for s in &status.sinks {
            gauge!("outbox_lag_records", "sink" => s.name.clone()).set(s.lag as f64);
            gauge!("outbox_dlq_entries", "sink" => s.name.clone()).set(s.dlq as f64);
        }
    }
}

impl MetricsHook for PromHook {
    fn appended(&self, n: u64, bytes: u64) {
        counter!("outbox_appended_records_total").increment(n);
        counter!("outbox_appended_bytes_total").increment(bytes);
        for s in &self.sinks {
            counter!("outbox_sink_appended_records_total", "sink" => s.clone()).increment(n);
        }
    }
    fn append_durable(&self, latency: Duration) {
        histogram!("outbox_append_durable_seconds").record(latency.as_secs_f64());
    }
    fn delivered(&self, sink: &str, n: u64, latency: Duration) {
        counter!("outbox_delivered_total", "sink" => sink.to_string()).increment(n);
        histogram!("outbox_append_to_delivered_seconds", "sink" => sink.to_string())
            .record(latency.as_secs_f64());
    }
    fn retried(&self, sink: &str) {
        counter!("outbox_retries_total", "sink" => sink.to_string()).increment(1);
    }
    fn dlq(&self, sink: &str, n: u64) {
        counter!("outbox_dlq_total", "sink" => sink.to_string()).increment(n);
    }
    fn dropped(&self, sink: &str, n: u64) {
        counter!("outbox_dropped_total", "sink" => sink.to_string()).increment(n);
    }
    fn panicked(&self, sink: &str) {
        counter!("outbox_panics_total", "sink" => sink.to_string()).increment(1);
    }
    fn lag(&self, sink: &str, records: u64) {
        gauge!("outbox_lag_records", "sink" => sink.to_string()).set(records as f64);
    }
    fn acked(&self, n: u64) {
        counter!("outbox_acked_total").increment(n);
    }
    fn log_size(&self, records: u64, bytes: u64) {
        gauge!("outbox_log_records").set(records as f64);
        gauge!("outbox_log_bytes").set(bytes as f64);
    }
}
