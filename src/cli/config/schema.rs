//! The configuration file as written: one serde type per table, each
//! `deny_unknown_fields`, every key optional. Nothing here checks a value:
//! resolution (`resolve.rs`) does.

use std::path::{Path, PathBuf};

use outbox::filter::FilterSpec;
use outbox::sink::{JetStreamSinkConfig, WebhookConfig};
use outbox::source::jetstream::JetStreamSourceConfig;
use outbox::{Error, Result};
use serde::Deserialize;

/// The file, as written. Every key is optional; see `docs/configuration.md`.
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The data directory.
    pub data_dir: Option<PathBuf>,
    /// `always`, `full` or `interval:MS`.
    pub sync: Option<String>,
    /// sled's page cache in bytes.
    pub cache_bytes: Option<u64>,
    /// Largest record accepted (payload plus headers).
    pub max_record_bytes: Option<usize>,
    /// Seconds the sinks get to catch up at shutdown.
    pub drain_timeout_secs: Option<u64>,
    /// How long an idempotency key (HTTP `Idempotency-Key`, a JetStream
    /// message's stream sequence) is remembered, e.g. `"24h"`.
    pub idempotency_window: Option<String>,
    /// How long an orphaned sink keeps its backlog, e.g. `"7d"`.
    pub orphan_retention: Option<String>,
    /// HTTP ingest; absent means stdin (or `[source]`).
    pub ingest: Option<IngestFile>,
    /// Where records come from, when not stdin or HTTP ingest.
    pub source: Option<SourceFile>,
    /// Admin endpoint; absent means none.
    pub admin: Option<AdminFile>,
    /// Logging.
    pub log: Option<LogFile>,
    /// The sinks, in order.
    #[serde(default)]
    pub sinks: Vec<SinkFile>,
}

/// `[ingest]`
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestFile {
    /// `HOST:PORT`, or a bare `PORT` for 127.0.0.1.
    pub listen: Option<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Name of the environment variable holding the bearer token.
    pub token_env: Option<String>,
}

/// `[source]`: `kind` picks the source, the other keys are its settings.
#[derive(Deserialize, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceFile {
    /// NDJSON on stdin (the default when there is no `[source]`).
    Stdin,
    /// A durable pull consumer of a JetStream stream.
    Jetstream(JetStreamSourceConfig),
}

/// `[admin]`
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `HOST:PORT`, or a bare `PORT` for 127.0.0.1.
    pub listen: Option<String>,
    /// Name of the environment variable holding the bearer token.
    pub token_env: Option<String>,
}

/// `[log]`
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `text` or `json`.
    pub format: Option<LogFormatFile>,
    /// A tracing filter such as `info` or `outbox=debug`; `RUST_LOG` wins.
    pub level: Option<String>,
}

/// Log format as written in the file.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatFile {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sink kinds.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// One payload per line on stdout.
    Stdout,
    /// One payload per line in `path`, fsynced before each offset commit.
    File,
    /// HTTP POST per record.
    Webhook,
    /// JetStream publish per record, acked by the stream.
    Jetstream,
}

/// `on_full` as written.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFullFile {
    /// Dispatch waits.
    Block,
    /// The sink skips ahead.
    Drop,
}

/// `start` as written.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartFile {
    /// Only records appended from now on.
    Head,
    /// The first record still in the log.
    Earliest,
}

/// One `[[sinks]]` entry.
#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkFile {
    /// The sink's name: 1-64 bytes of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `stdout`, `file` or `webhook`.
    pub kind: SinkKind,
    /// For `file`: the output file.
    pub path: Option<PathBuf>,
    /// For `webhook`: its settings (the `[sinks.webhook]` table).
    pub webhook: Option<WebhookConfig>,
    /// For `jetstream`: its settings (the `[sinks.jetstream]` table).
    pub jetstream: Option<JetStreamSinkConfig>,
    /// `block` (default) or `drop`.
    pub on_full: Option<OnFullFile>,
    /// Lag limit in records; 0 means no limit. Default 1,000,000.
    pub max_lag_records: Option<u64>,
    /// Lag limit in bytes; 0 or absent means no limit.
    pub max_lag_bytes: Option<u64>,
    /// Records per sink commit and offset commit. Default 512.
    pub batch_max: Option<usize>,
    /// `strict` (default: one delivery at a time, in order) or `none` (up to
    /// `max_in_flight` at once, in any order).
    pub ordering: Option<String>,
    /// Deliveries in flight under `ordering = "none"`. Default 64.
    pub max_in_flight: Option<usize>,
    /// Retries before the DLQ. Default 5.
    pub retry_max: Option<u32>,
    /// First retry delay in ms. Default 100.
    pub backoff_base_ms: Option<u64>,
    /// Retry delay ceiling in ms. Default 30000.
    pub backoff_max_ms: Option<u64>,
    /// Ceiling on a receiver's Retry-After in ms. Default 300000.
    pub retry_after_max_ms: Option<u64>,
    /// `head` (default) or `earliest`.
    pub start: Option<StartFile>,
    /// Retry delays such as `["5s", "5m", "30m"]`, instead of exponential
    /// backoff; excludes `retry_max`, `backoff_base_ms` and `backoff_max_ms`.
    pub retry_schedule: Option<Vec<String>>,
    /// The circuit breaker (`[sinks.breaker]`); absent means off.
    pub breaker: Option<BreakerFile>,
    /// The token bucket (`[sinks.rate_limit]`); absent means no limit.
    pub rate_limit: Option<RateLimitFile>,
    /// Which records the sink receives (`[sinks.filter]`); absent means all.
    pub filter: Option<FilterSpec>,
}

/// `[sinks.breaker]`
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// Open after this many failed attempts in a row.
    pub consecutive_failures: Option<u32>,
    /// Open when at least this percentage of the last `failure_window`
    /// attempts failed.
    pub failure_percent: Option<u32>,
    /// Attempts the percentage looks at. Default 100.
    pub failure_window: Option<u32>,
    /// How often an open breaker probes, e.g. `"30s"`. Default 30 s.
    pub probe_interval: Option<String>,
}

/// `[sinks.rate_limit]`
#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Sustained attempts per second.
    pub per_second: u32,
    /// Attempts allowed at once after an idle spell. Default `per_second`.
    pub burst: Option<u32>,
}

/// Reads and parses a config file.
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] naming the file when it cannot be read,
/// and naming the key (with its line) when it does not parse.
pub fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config("--config", format!("cannot read {}: {e}", path.display())))?;
    parse_file(&text).map_err(|reason| Error::config(path.display().to_string(), reason))
}

/// Parses config text. The error is toml's message, which names the key
/// and shows the line.
///
/// # Errors
/// The message, when the text is not valid TOML or has an unknown key or a
/// value of the wrong type.
pub fn parse_file(text: &str) -> std::result::Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
}
