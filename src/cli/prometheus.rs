//! The daemon's [`MetricsHook`]: the `metrics` facade with the Prometheus
//! exporter's recorder, rendered by `GET /metrics`.
//!
//! Metric names (all prefixed `outbox_`) are listed in
//! `docs/operations.md`; the dashboard (`docs/grafana/outbox.json`) and the
//! alert rules (`docs/prometheus/alerts.yml`) use them. Per-sink series
//! carry a `sink` label; sink names are validated (`[A-Za-z0-9_.-]`), so
//! they are safe as label values.
//!
//! Invariant: every per-sink series exists from the start (at zero, the
//! breaker `closed`), so an alert on a rate or a state sees a series
//! before the first event. `outbox_oldest_pending_age_seconds` is computed
//! at each scrape from the append time of the oldest record the sink has
//! not passed, so it keeps growing while a stuck sink reports nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use outbox::metrics::BreakerState;
use outbox::{Error, MetricsHook, Outbox, Result, StoreError};
use parking_lot::Mutex;

/// Latency buckets, in seconds: 0.5 ms to 60 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the global recorder and describes every metric.
///
/// # Errors
/// [`StoreError::Storage`] when a recorder is already installed.
pub fn install() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| StoreError::Storage(format!("metrics recorder: {e}").into()))?;
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
        "Records dead-lettered (moved to the DLQ)."
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
    describe_counter!(
        "outbox_sink_acked_records_total",
        Unit::Count,
        "Records the sink's durable committed offset has passed."
    );
    describe_gauge!(
        "outbox_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest record the sink has not passed yet; 0 when caught up."
    );
    describe_gauge!(
        "outbox_breaker_state",
        Unit::Count,
        "1 for the sink's current breaker state (closed, open, paused), 0 for the others."
    );
    describe_counter!(
        "outbox_filtered_total",
        Unit::Count,
        "Records the sink's filter passed over."
    );
    describe_counter!(
        "outbox_log_read_errors_total",
        Unit::Count,
        "Times the sink's worker could not read the log at its position (I/O errors it retries, and the corruption that stops it)."
    );
    describe_counter!(
        "outbox_sink_lost_records_total",
        Unit::Count,
        "Seqs the sink's worker passed over in lost markers: records `outbox salvage` could not recover."
    );
    describe_gauge!(
        "outbox_write_stalled",
        Unit::Count,
        "1 while the appender's write to the log or the group commit's flush has not returned for 30 s (Outbox::stalled): nothing is receipted or delivered; a restart replays the log."
    );
    describe_gauge!(
        "outbox_sink_corrupt",
        Unit::Count,
        "1 once the sink's worker stopped on data it cannot read (a gap in the log, a bad checksum): it delivers nothing until the store is repaired."
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
    /// What the engine last reported through `oldest_pending`, per sink.
    oldest: Mutex<HashMap<String, Option<SystemTime>>>,
}

/// Per-sink counters that start at zero.
const SINK_COUNTERS: &[&str] = &[
    "outbox_sink_appended_records_total",
    "outbox_delivered_total",
    "outbox_retries_total",
    "outbox_dlq_total",
    "outbox_dropped_total",
    "outbox_panics_total",
    "outbox_sink_acked_records_total",
    "outbox_filtered_total",
    "outbox_log_read_errors_total",
    "outbox_sink_lost_records_total",
];

impl PromHook {
    /// A hook for these sinks; their series start at zero (the breaker
    /// closed) so they show up before the first event.
    pub fn new(sinks: Vec<String>) -> Arc<PromHook> {
        for s in &sinks {
            for name in SINK_COUNTERS {
                counter!(*name, "sink" => s.clone()).absolute(0);
            }
            set_breaker(s, BreakerState::Closed);
            gauge!("outbox_oldest_pending_age_seconds", "sink" => s.clone()).set(0.0);
            gauge!("outbox_sink_corrupt", "sink" => s.clone()).set(0.0);
        }
        counter!("outbox_acked_total").absolute(0);
        counter!("outbox_appended_records_total").absolute(0);
        counter!("outbox_appended_bytes_total").absolute(0);
        Arc::new(PromHook {
            sinks,
            oldest: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the gauges that are read at scrape time: head, lag, DLQ size
    /// and each sink's oldest pending age.
    pub fn scrape<T: Send + 'static>(&self, outbox: &Outbox<T>) {
        let Ok(status) = outbox.status() else {
            return;
        };
        gauge!("outbox_head_seq").set(status.head as f64);
        let stalled = outbox.stalled(Outbox::<T>::STALL_AFTER).is_some();
        gauge!("outbox_write_stalled").set(if stalled { 1.0 } else { 0.0 });
        let now = SystemTime::now();
        for s in &status.sinks {
            gauge!("outbox_lag_records", "sink" => s.name.clone()).set(s.lag as f64);
            gauge!("outbox_dlq_entries", "sink" => s.name.clone()).set(s.dlq as f64);
            // The engine reports it at open and whenever it changes.
            let oldest = self.oldest.lock().get(&s.name).copied().flatten();
            gauge!("outbox_oldest_pending_age_seconds", "sink" => s.name.clone())
                .set(age_seconds(oldest, now));
        }
    }
}

/// Seconds from `oldest` to `now`; 0 when nothing is pending or the clock
/// stepped back past it.
fn age_seconds(oldest: Option<SystemTime>, now: SystemTime) -> f64 {
    oldest
        .and_then(|t| now.duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn set_breaker(sink: &str, state: BreakerState) {
    for s in BreakerState::ALL {
        gauge!("outbox_breaker_state", "sink" => sink.to_string(), "state" => s.as_str())
            .set(if s == state { 1.0 } else { 0.0 });
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
    fn sink_acked(&self, sink: &str, n: u64) {
        counter!("outbox_sink_acked_records_total", "sink" => sink.to_string()).increment(n);
    }
    fn oldest_pending(&self, sink: &str, appended_at: Option<SystemTime>) {
        self.oldest.lock().insert(sink.to_string(), appended_at);
    }
    fn breaker(&self, sink: &str, state: BreakerState) {
        set_breaker(sink, state);
    }
    fn filtered(&self, sink: &str, n: u64) {
        counter!("outbox_filtered_total", "sink" => sink.to_string()).increment(n);
    }
    fn read_failed(&self, sink: &str) {
        counter!("outbox_log_read_errors_total", "sink" => sink.to_string()).increment(1);
    }
    fn corrupt(&self, sink: &str, _reason: &str) {
        counter!("outbox_log_read_errors_total", "sink" => sink.to_string()).increment(1);
        gauge!("outbox_sink_corrupt", "sink" => sink.to_string()).set(1.0);
    }
    fn lost(&self, sink: &str, n: u64) {
        counter!("outbox_sink_lost_records_total", "sink" => sink.to_string()).increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use std::time::UNIX_EPOCH;

    /// Renders what `f` records through a fresh hook, with a local
    /// recorder (the global one is the daemon's).
    fn rendered(f: impl FnOnce(&PromHook)) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let hook = PromHook::new(vec!["web".into(), "file".into()]);
            f(&hook);
        });
        handle.render()
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| l[series.len()..].trim())
    }

    #[test]
    fn per_sink_series_start_at_zero_with_the_breaker_closed() {
        let text = rendered(|_| {});
        for name in SINK_COUNTERS {
            for sink in ["web", "file"] {
                let series = format!("{name}{{sink=\"{sink}\"}}");
                assert_eq!(line(&text, &series), Some("0"), "{series} in\n{text}");
            }
        }
        let state = |s: &str| format!("outbox_breaker_state{{sink=\"web\",state=\"{s}\"}}");
        assert_eq!(line(&text, &state("closed")), Some("1"), "{text}");
        assert_eq!(line(&text, &state("open")), Some("0"), "{text}");
        assert_eq!(line(&text, &state("paused")), Some("0"), "{text}");
    }

    #[test]
    fn alerting_signals_are_exported_per_sink() {
        let text = rendered(|h| {
            h.sink_acked("web", 5);
            h.sink_acked("web", 2);
            h.sink_acked("file", 9);
            h.filtered("web", 3);
            h.read_failed("file");
            h.read_failed("file");
            h.breaker("web", BreakerState::Open);
            h.breaker("file", BreakerState::Paused);
        });
        let v = |series: &str| line(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert_eq!(v("outbox_sink_acked_records_total{sink=\"web\"}"), "7");
        assert_eq!(v("outbox_sink_acked_records_total{sink=\"file\"}"), "9");
        assert_eq!(v("outbox_filtered_total{sink=\"web\"}"), "3");
        assert_eq!(v("outbox_filtered_total{sink=\"file\"}"), "0");
        assert_eq!(v("outbox_log_read_errors_total{sink=\"file\"}"), "2");
        assert_eq!(v("outbox_breaker_state{sink=\"web\",state=\"open\"}"), "1");
        assert_eq!(
            v("outbox_breaker_state{sink=\"web\",state=\"closed\"}"),
            "0"
        );
        assert_eq!(
            v("outbox_breaker_state{sink=\"file\",state=\"paused\"}"),
            "1"
        );
        assert_eq!(
            v("outbox_breaker_state{sink=\"file\",state=\"closed\"}"),
            "0"
        );
    }

    #[test]
    fn oldest_pending_is_kept_as_a_time_and_aged_when_read() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(age_seconds(None, now), 0.0);
        assert_eq!(
            age_seconds(Some(now - Duration::from_millis(2_500)), now),
            2.5
        );
        // A clock that stepped back reads as nothing pending, not negative.
        assert_eq!(age_seconds(Some(now + Duration::from_secs(1)), now), 0.0);
        let hook = PromHook {
            sinks: vec!["web".into()],
            oldest: Mutex::new(HashMap::new()),
        };
        hook.oldest_pending("web", Some(now));
        assert_eq!(hook.oldest.lock().get("web"), Some(&Some(now)));
        hook.oldest_pending("web", None);
        assert_eq!(hook.oldest.lock().get("web"), Some(&None));
    }
}
