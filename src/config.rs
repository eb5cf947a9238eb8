//! Engine configuration: sync policy, per-sink delivery settings, limits.
//!
//! Each setting documents its default. [`OutboxConfig::validate`] and
//! [`SinkConfig::validate`] reject a bad value with the parameter's name and
//! the reason, before anything is opened.

use std::time::Duration;

use crate::error::{Error, Result};

/// When a dispatch is reported durable, and what survives what.
///
/// | policy        | receipt after                     | survives kill -9 | survives power loss |
/// |---------------|-----------------------------------|------------------|---------------------|
/// | `Always`      | the sled flush that covers it     | yes              | no (sync_file_range)|
/// | `Full`        | that flush plus `fsync` of files  | yes              | yes                 |
/// | `Interval(d)` | the write, before any flush       | up to `d` of receipted records may be lost | no |
///
/// Under every policy, acks are released only after the offset commits that
/// pass their record are durable, and workers see a record only once it is
/// durable, so a seq is never reused and an ack is never premature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Group commit (the default): concurrent dispatches share one sled
    /// flush; nothing is receipted or acked before the flush that covers it.
    #[default]
    Always,
    /// `Always`, plus an fsync of sled's files after each flush.
    Full,
    /// Receipt at once; flush at most every this often.
    Interval(Duration),
}

impl SyncPolicy {
    /// Parses `always`, `full`, or `interval:MS` / `interval(MS)`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `sync` on anything else.
    pub fn parse(s: &str) -> Result<SyncPolicy> {
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
            _ => Err(Error::config(
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

/// Per-sink delivery settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Full-log behaviour. Default [`OnFull::Block`].
    pub on_full: OnFull,
    /// Lag limit in records. Default 1,000,000. `None` for no limit.
    pub max_lag_records: Option<u64>,
    /// Lag limit in bytes of payload and headers. Default none.
    pub max_lag_bytes: Option<u64>,
    /// Most records delivered between two offset commits. Default 512.
    pub batch_max: usize,
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
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            on_full: OnFull::Block,
            max_lag_records: Some(1_000_000),
            max_lag_bytes: None,
            batch_max: 512,
            retry_max: 5,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(300),
            start: Start::Head,
        }
    }
}

impl SinkConfig {
    /// Checks the values; `sink` names the sink in the error.
    ///
    /// # Errors
    /// [`Error::Config`] naming the parameter.
    pub fn validate(&self, sink: &str) -> Result<()> {
        let p = |name: &str| format!("sinks.{sink}.{name}");
        if self.batch_max == 0 {
            return Err(Error::config(p("batch_max"), "must be at least 1"));
        }
        if self.max_lag_records == Some(0) {
            return Err(Error::config(p("max_lag_records"), "must be at least 1"));
        }
        if self.max_lag_bytes == Some(0) {
            return Err(Error::config(p("max_lag_bytes"), "must be at least 1"));
        }
        if self.backoff_base.is_zero() {
            return Err(Error::config(p("backoff_base"), "must be above zero"));
        }
        if self.backoff_max < self.backoff_base {
            return Err(Error::config(
                p("backoff_max"),
                "must be at least backoff_base",
            ));
        }
        if self.on_full == OnFull::Drop
            && self.max_lag_records.is_none()
            && self.max_lag_bytes.is_none()
        {
            return Err(Error::config(
                p("on_full"),
                "drop needs max_lag_records or max_lag_bytes",
            ));
        }
        Ok(())
    }
}

/// Engine-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Default [`SyncPolicy::Always`].
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
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            sync: SyncPolicy::Always,
            cache_bytes: 64 << 20,
            max_record_bytes: 4 << 20,
            max_batch_records: 1024,
            max_batch_bytes: 384 << 10,
            max_value_bytes: 96 << 10,
            backlog_value_bytes: 4 << 10,
            backlog_records: 65_536,
            tail_cache_bytes: 8 << 20,
            truncate_every: Duration::from_millis(10),
        }
    }
}

impl OutboxConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`Error::Config`] naming the parameter.
    pub fn validate(&self) -> Result<()> {
        if self.max_batch_records == 0 {
            return Err(Error::config("max_batch_records", "must be at least 1"));
        }
        if self.max_value_bytes == 0 {
            return Err(Error::config("max_value_bytes", "must be at least 1"));
        }
        if self.backlog_value_bytes == 0 {
            return Err(Error::config("backlog_value_bytes", "must be at least 1"));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > crate::codec::MAX_VALUE_BYTES / 2 {
            return Err(Error::config(
                "max_record_bytes",
                format!(
                    "must be between 1 and {}",
                    crate::codec::MAX_VALUE_BYTES / 2
                ),
            ));
        }
        if self.cache_bytes < (1 << 20) {
            return Err(Error::config("cache_bytes", "must be at least 1 MiB"));
        }
        if self.truncate_every.is_zero() {
            return Err(Error::config("truncate_every", "must be above zero"));
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
}
