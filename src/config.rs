//! Engine configuration: sync policy, per-sink delivery settings, limits.
//!
//! Each setting documents its default. [`OutboxConfig::validate`] and
//! [`SinkConfig::validate`] reject a bad value with the parameter's name and
//! the reason, before anything is opened.

use std::time::Duration;

use crate::error::ConfigError;
use crate::filter::{Filter, FilterSpec};

/// When a dispatch is reported durable, and what survives what.
///
/// | policy        | receipt after                                   | survives kill -9 | survives power loss |
/// |---------------|-------------------------------------------------|------------------|---------------------|
/// | `Full`        | the sled flush that covers it, then `fdatasync` | yes              | yes                 |
/// | `Always`      | that sled flush only (`sync_file_range`)        | yes              | no                  |
/// | `Interval(d)` | the write, before any flush                     | up to `d` of receipted records may be lost | no |
///
/// Under every policy, acks are released only after the offset commits that
/// pass their record are durable at the policy's level, workers see a record
/// only once it is, and seqs are reserved durably ahead of receipts, so a
/// seq is never handed to two records even when receipted records are lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Group commit, power-safe (the default): concurrent dispatches share
    /// one sled flush, followed by an `fdatasync` of sled's file (and an
    /// `fsync` of new blob files and changed directories); nothing is
    /// receipted or acked before it returns. Measured at 0.79 × `Always`'s
    /// throughput in-process with 1,024 records in flight, and 0.84 × through
    /// the binary (docs/performance.md).
    #[default]
    Full,
    /// Group commit without the fsync: survives a process crash, not a
    /// power loss (sled's flush uses `sync_file_range`, which leaves the
    /// disk's cache and the file's metadata to chance).
    Always,
    /// Receipt at once; flush at most every this often.
    Interval(Duration),
}

impl SyncPolicy {
    /// Parses `always`, `full`, or `interval:MS` / `interval(MS)`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `sync` on anything else.
    pub fn parse(s: &str) -> Result<SyncPolicy, ConfigError> {
        let s = s.trim();
        match s {
            "always" => return Ok(SyncPolicy::Always),
            "full" => return Ok(SyncPolicy::Full),
            _ => {}
        }
        let ms = s
            .strip_prefix("interval:")
            .or_else(|| {
                s.strip_prefix("interval(")
                    .and_then(|r| r.strip_suffix(')'))
            })
            .and_then(|n| n.trim().trim_end_matches("ms").parse::<u64>().ok());
        match ms {
            Some(ms) if ms > 0 => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
            _ => Err(ConfigError::invalid(
                "sync",
                format!("`{s}` is not one of always, full, interval:MS (MS > 0)"),
            )),
        }
    }
}

/// What a sink does when its lag reaches its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Dispatch waits for room (backpressure). The default.
    #[default]
    Block,
    /// The sink skips ahead: its offset jumps to keep only the newest
    /// records within the limit, the skipped count is reported, and dispatch
    /// never waits on it.
    Drop,
}

/// Where a sink configured for the first time starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Start {
    /// At the head: only records appended from now on. The default.
    #[default]
    Head,
    /// At the first record still in the log.
    Earliest,
}

/// The order in which a sink sees records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ordering {
    /// One delivery at a time, in seq order: a record is attempted only
    /// once every earlier one is delivered, dead-lettered or passed over, so a
    /// retried record holds up the ones behind it. The default, and what
    /// the file and stdout sinks want.
    #[default]
    Strict,
    /// Up to `max_in_flight` deliveries at once; a retried record does not
    /// hold up the others, so records can arrive out of order. The
    /// committed offset is the contiguous watermark of finished records, so
    /// after a crash everything above it is delivered again (same ids).
    Unordered,
}

impl Ordering {
    /// Parses `strict` or `none`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `param` on anything else.
    pub fn parse(s: &str, param: &str) -> Result<Ordering, ConfigError> {
        match s {
            "strict" => Ok(Ordering::Strict),
            "none" => Ok(Ordering::Unordered),
            other => Err(ConfigError::invalid(
                param,
                format!("`{other}` is not one of strict, none"),
            )),
        }
    }
}

/// Deliveries in flight by default under [`Ordering::Unordered`]: enough to
/// keep a receiver 20 ms away busy at about 3,000 records a second.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Per-sink delivery settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Full-log behaviour. Default [`OnFull::Block`].
    pub on_full: OnFull,
    /// Lag limit in records. Default 1,000,000. `None` for no limit.
    pub max_lag_records: Option<u64>,
    /// Lag limit in bytes of payload and headers. Default none.
    pub max_lag_bytes: Option<u64>,
    /// Most records one sink commit (and offset commit) covers, and half of
    /// the most records the worker keeps started beyond its durable offset.
    /// Default 512.
    pub batch_max: usize,
    /// Whether records reach the sink in seq order. Default
    /// [`Ordering::Strict`].
    pub ordering: Ordering,
    /// Most deliveries in flight at once under [`Ordering::Unordered`].
    /// Default `None`: 1 under `Strict` (which allows only 1), 64 under
    /// `Unordered`.
    pub max_in_flight: Option<usize>,
    /// Retries after the first attempt before the DLQ. Default 5.
    pub retry_max: u32,
    /// First retry delay. Default 100 ms.
    pub backoff_base: Duration,
    /// Retry delay ceiling. Default 30 s.
    pub backoff_max: Duration,
    /// Ceiling on a receiver's `Retry-After`. Default 5 minutes.
    pub retry_after_max: Duration,
    /// Where a new sink starts. Default [`Start::Head`].
    pub start: Start,
    /// Explicit retry delays, in order, instead of exponential backoff: the
    /// list's length is the number of retries, and `retry_max`,
    /// `backoff_base` and `backoff_max` then do not apply to deliveries.
    /// `Retry-After` still wins, capped by `retry_after_max`. Default
    /// `None` (exponential backoff). A permanent error goes to the DLQ at
    /// once whatever the schedule.
    pub retry_schedule: Option<Vec<Duration>>,
    /// The endpoint-health circuit breaker. Default `None` (off).
    pub breaker: Option<BreakerConfig>,
    /// A token bucket on deliveries. Default `None` (no limit).
    pub rate_limit: Option<RateLimit>,
    /// Which records this sink receives. Default `None` (every record).
    pub filter: Option<FilterSpec>,
}

/// When the circuit breaker opens, and how it probes. At least one of the
/// two triggers must be set.
///
/// What counts: a transient failure (timeout, refused connection, 5xx, 429)
/// is a failure; a success or a permanent rejection (a 4xx for one record)
/// is a sign of life, since the endpoint answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Open after this many failed attempts in a row. Default `None`.
    pub consecutive_failures: Option<u32>,
    /// Open when this share of the last attempts failed. Default `None`.
    pub failure_ratio: Option<FailureRatio>,
    /// While open, one probe (the next record) is sent this often. Default
    /// 30 s.
    pub probe_interval: Duration,
}

impl BreakerConfig {
    /// Default of [`BreakerConfig::probe_interval`].
    pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
    /// Largest [`FailureRatio::window`]: the window is kept in memory.
    pub const MAX_WINDOW: u32 = 10_000;
}

/// "At least `percent` % of the last `window` attempts failed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureRatio {
    /// 1 to 100.
    pub percent: u8,
    /// Attempts looked at, 1 to [`BreakerConfig::MAX_WINDOW`]. The ratio is
    /// only judged once this many attempts have been seen since the breaker
    /// last closed. Default 100.
    pub window: u32,
}

impl FailureRatio {
    /// Default of [`FailureRatio::window`].
    pub const DEFAULT_WINDOW: u32 = 100;
}

/// A token bucket: `per_second` tokens are added each second, at most
/// `burst` are kept, and each delivery attempt takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained attempts per second. At least 1.
    pub per_second: u32,
    /// Attempts that may go at once after an idle spell. At least 1.
    /// Default in the config file: `per_second`.
    pub burst: u32,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            on_full: OnFull::Block,
            max_lag_records: Some(1_000_000),
            max_lag_bytes: None,
            batch_max: 512,
            ordering: Ordering::Strict,
            max_in_flight: None,
            retry_max: 5,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(300),
            start: Start::Head,
            retry_schedule: None,
            breaker: None,
            rate_limit: None,
            filter: None,
        }
    }
}

impl SinkConfig {
    /// Deliveries the worker keeps in flight.
    pub fn in_flight(&self) -> usize {
        match self.ordering {
            Ordering::Strict => 1,
            Ordering::Unordered => self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
        }
    }

    /// Checks the values; `sink` names the sink in the error.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the parameter.
    pub fn validate(&self, sink: &str) -> Result<(), ConfigError> {
        let p = |name: &str| format!("sinks.{sink}.{name}");
        if self.batch_max == 0 {
            return Err(ConfigError::invalid(p("batch_max"), "must be at least 1"));
        }
        if self.max_lag_records == Some(0) {
            return Err(ConfigError::invalid(
                p("max_lag_records"),
                "must be at least 1",
            ));
        }
        if self.max_lag_bytes == Some(0) {
            return Err(ConfigError::invalid(
                p("max_lag_bytes"),
                "must be at least 1",
            ));
        }
        if self.backoff_base.is_zero() {
            return Err(ConfigError::invalid(
                p("backoff_base"),
                "must be above zero",
            ));
        }
        if self.backoff_max < self.backoff_base {
            return Err(ConfigError::invalid(
                p("backoff_max"),
                "must be at least backoff_base",
            ));
        }
        if self.on_full == OnFull::Drop
            && self.max_lag_records.is_none()
            && self.max_lag_bytes.is_none()
        {
            return Err(ConfigError::invalid(
                p("on_full"),
                "drop needs max_lag_records or max_lag_bytes",
            ));
        }
        match (self.ordering, self.max_in_flight) {
            (_, Some(0)) => {
                return Err(ConfigError::invalid(
                    p("max_in_flight"),
                    "must be at least 1",
                ));
            }
            (Ordering::Strict, Some(n)) if n > 1 => {
                return Err(ConfigError::invalid(
                    p("max_in_flight"),
                    format!(
                        "is {n}, but ordering = \"strict\" delivers one record at a time; set ordering = \"none\" to keep several in flight"
                    ),
                ));
            }
            _ => {}
        }
        if let Some(schedule) = &self.retry_schedule
            && schedule.is_empty()
        {
            return Err(ConfigError::invalid(
                p("retry_schedule"),
                "must list at least one delay (for no retries, set retry_max = 0)",
            ));
        }
        if let Some(b) = &self.breaker {
            b.validate(&p("breaker"))?;
        }
        if let Some(r) = &self.rate_limit {
            if r.per_second == 0 {
                return Err(ConfigError::invalid(
                    p("rate_limit.per_second"),
                    "must be at least 1",
                ));
            }
            if r.burst == 0 {
                return Err(ConfigError::invalid(
                    p("rate_limit.burst"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(f) = &self.filter {
            Filter::new(f, &p("filter"))?;
        }
        Ok(())
    }
}

impl BreakerConfig {
    /// Checks the values; `param` prefixes the parameter in the error.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the parameter.
    pub fn validate(&self, param: &str) -> Result<(), ConfigError> {
        let p = |name: &str| format!("{param}.{name}");
        if self.consecutive_failures.is_none() && self.failure_ratio.is_none() {
            return Err(ConfigError::invalid(
                param,
                "set consecutive_failures or failure_percent (or remove the breaker)",
            ));
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::invalid(
                p("consecutive_failures"),
                "must be at least 1",
            ));
        }
        if let Some(r) = self.failure_ratio {
            if !(1..=100).contains(&r.percent) {
                return Err(ConfigError::invalid(
                    p("failure_percent"),
                    format!("{} is not between 1 and 100", r.percent),
                ));
            }
            if !(1..=Self::MAX_WINDOW).contains(&r.window) {
                return Err(ConfigError::invalid(
                    p("failure_window"),
                    format!("{} is not between 1 and {}", r.window, Self::MAX_WINDOW),
                ));
            }
        }
        if self.probe_interval.is_zero() {
            return Err(ConfigError::invalid(
                p("probe_interval"),
                "must be above zero",
            ));
        }
        Ok(())
    }
}

/// Engine-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Default [`SyncPolicy::Full`].
    pub sync: SyncPolicy,
    /// sled page cache. Default 64 MiB.
    pub cache_bytes: u64,
    /// Largest record (payload plus headers) accepted. Default 4 MiB.
    pub max_record_bytes: usize,
    /// Most records in one group commit. Default 1024.
    pub max_batch_records: usize,
    /// Most bytes in one group commit, unless one request alone is larger.
    /// Default 384 KiB.
    pub max_batch_bytes: usize,
    /// Most bytes in one log value. Whole requests are packed into values of
    /// at most this size; a larger request is cut into several values
    /// written in one atomic sled batch. Default 96 KiB: sled costs per
    /// insert, so fewer, larger values are faster (8 KiB values halved
    /// throughput); smaller values let sled's cache evict more under a large
    /// backlog (docs/performance.md).
    pub max_value_bytes: usize,
    /// Value size once a backlog builds (see `backlog_records`). Default
    /// 4 KiB: sled keeps the pages it writes in memory unless they are
    /// small, so a session that builds a 1M-record backlog peaked at
    /// 128 MiB with 4 KiB values, 140 MiB with 8 KiB and 300 MiB with 96 KiB
    /// (docs/performance.md).
    pub backlog_value_bytes: usize,
    /// Lag, in records, of the slowest sink above which values are cut at
    /// `backlog_value_bytes` instead of `max_value_bytes`. Default 65,536.
    pub backlog_records: u64,
    /// Decoded batches kept in memory for the workers. Default 8 MiB, about
    /// 25 ms of records at a million a second: a worker that keeps up reads
    /// from it, one that does not reads from sled either way.
    pub tail_cache_bytes: usize,
    /// How often truncation runs. Default 10 ms: sled reuses the space of
    /// removed batches, so truncating promptly keeps the file small (at
    /// 50 ms the steady-state file was half again as large; a pass with
    /// nothing to remove reads a few atomics).
    pub truncate_every: Duration,
    /// How long an orphan (a sink with an offset that is no longer
    /// configured) keeps its backlog before it is forgotten at an open.
    /// Default 7 days: long enough to notice and fix a typo in the
    /// configuration, short enough that a sink removed on purpose does not
    /// hold the log forever. `outbox sinks forget` forgets one at once.
    pub orphan_retention: Duration,
    /// How long an idempotency key of [`crate::Outbox::dispatch_once`] is
    /// remembered. Default 24 hours. Each key costs about 100 bytes in the
    /// store until it is pruned.
    pub idempotency_window: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            sync: SyncPolicy::Full,
            cache_bytes: 64 << 20,
            max_record_bytes: 4 << 20,
            max_batch_records: 1024,
            max_batch_bytes: 384 << 10,
            max_value_bytes: 96 << 10,
            backlog_value_bytes: 4 << 10,
            backlog_records: 65_536,
            tail_cache_bytes: 8 << 20,
            truncate_every: Duration::from_millis(10),
            orphan_retention: Duration::from_secs(7 * 24 * 3600),
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }
}

impl OutboxConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_batch_records == 0 {
            return Err(ConfigError::invalid(
                "max_batch_records",
                "must be at least 1",
            ));
        }
        if self.max_value_bytes == 0 {
            return Err(ConfigError::invalid(
                "max_value_bytes",
                "must be at least 1",
            ));
        }
        if self.backlog_value_bytes == 0 {
            return Err(ConfigError::invalid(
                "backlog_value_bytes",
                "must be at least 1",
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > crate::codec::MAX_VALUE_BYTES / 2 {
            return Err(ConfigError::invalid(
                "max_record_bytes",
                format!(
                    "must be between 1 and {}",
                    crate::codec::MAX_VALUE_BYTES / 2
                ),
            ));
        }
        if self.cache_bytes < (1 << 20) {
            return Err(ConfigError::invalid(
                "cache_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.truncate_every.is_zero() {
            return Err(ConfigError::invalid("truncate_every", "must be above zero"));
        }
        if self.idempotency_window.is_zero() {
            return Err(ConfigError::invalid(
                "idempotency_window",
                "must be above zero",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policy_parses() {
        assert_eq!(SyncPolicy::parse("always").unwrap(), SyncPolicy::Always);
        assert_eq!(SyncPolicy::parse("full").unwrap(), SyncPolicy::Full);
        assert_eq!(
            SyncPolicy::parse("interval:50").unwrap(),
            SyncPolicy::Interval(Duration::from_millis(50))
        );
        assert_eq!(
            SyncPolicy::parse("interval(20ms)").unwrap(),
            SyncPolicy::Interval(Duration::from_millis(20))
        );
        let e = SyncPolicy::parse("sometimes").unwrap_err().to_string();
        assert!(e.contains("sync") && e.contains("sometimes"), "{e}");
        assert!(SyncPolicy::parse("interval:0").is_err());
    }

    #[test]
    fn bad_sink_settings_name_the_parameter() {
        let c = SinkConfig {
            batch_max: 0,
            ..SinkConfig::default()
        };
        assert!(
            c.validate("web")
                .unwrap_err()
                .to_string()
                .contains("sinks.web.batch_max")
        );
        let c = SinkConfig {
            on_full: OnFull::Drop,
            max_lag_records: None,
            ..SinkConfig::default()
        };
        assert!(c.validate("a").unwrap_err().to_string().contains("on_full"));
        assert!(SinkConfig::default().validate("a").is_ok());
        assert!(OutboxConfig::default().validate().is_ok());
    }

    #[test]
    fn delivery_feature_settings_are_checked_and_named() {
        let err = |c: SinkConfig| c.validate("hook").unwrap_err().to_string();
        let e = err(SinkConfig {
            retry_schedule: Some(vec![]),
            ..SinkConfig::default()
        });
        assert!(e.contains("sinks.hook.retry_schedule"), "{e}");
        let breaker = BreakerConfig {
            consecutive_failures: None,
            failure_ratio: None,
            probe_interval: BreakerConfig::DEFAULT_PROBE_INTERVAL,
        };
        let with = |b: BreakerConfig| SinkConfig {
            breaker: Some(b),
            ..SinkConfig::default()
        };
        let e = err(with(breaker.clone()));
        assert!(
            e.contains("sinks.hook.breaker:") && e.contains("consecutive_failures"),
            "{e}"
        );
        let e = err(with(BreakerConfig {
            consecutive_failures: Some(0),
            ..breaker.clone()
        }));
        assert!(e.contains("sinks.hook.breaker.consecutive_failures"), "{e}");
        for (percent, window, key) in [
            (0, 10, "failure_percent"),
            (101, 10, "failure_percent"),
            (50, 0, "failure_window"),
            (50, BreakerConfig::MAX_WINDOW + 1, "failure_window"),
        ] {
            let e = err(with(BreakerConfig {
                failure_ratio: Some(FailureRatio { percent, window }),
                ..breaker.clone()
            }));
            assert!(e.contains(&format!("sinks.hook.breaker.{key}")), "{e}");
        }
        let e = err(with(BreakerConfig {
            consecutive_failures: Some(5),
            probe_interval: Duration::ZERO,
            ..breaker.clone()
        }));
        assert!(e.contains("sinks.hook.breaker.probe_interval"), "{e}");
        for (per_second, burst, key) in [(0, 1, "per_second"), (1, 0, "burst")] {
            let e = err(SinkConfig {
                rate_limit: Some(RateLimit { per_second, burst }),
                ..SinkConfig::default()
            });
            assert!(e.contains(&format!("sinks.hook.rate_limit.{key}")), "{e}");
        }
        let mut spec = FilterSpec::default();
        spec.headers.insert("event-type".into(), vec!["a[".into()]);
        let e = err(SinkConfig {
            filter: Some(spec),
            ..SinkConfig::default()
        });
        assert!(e.contains("sinks.hook.filter.headers.event-type[0]"), "{e}");

        let good = SinkConfig {
            retry_schedule: Some(vec![Duration::ZERO, Duration::from_secs(5)]),
            breaker: Some(BreakerConfig {
                consecutive_failures: Some(1),
                failure_ratio: Some(FailureRatio {
                    percent: 100,
                    window: BreakerConfig::MAX_WINDOW,
                }),
                probe_interval: Duration::from_millis(1),
            }),
            rate_limit: Some(RateLimit {
                per_second: 1,
                burst: 1,
            }),
            filter: Some(FilterSpec::default()),
            ..SinkConfig::default()
        };
        good.validate("hook").unwrap();
    }
}
