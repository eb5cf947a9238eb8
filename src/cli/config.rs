//! `outbox run --config FILE`: the TOML file, the flags merged over it, and
//! the checked plan the daemon runs.
//!
//! Invariants:
//! - every table is `deny_unknown_fields`, so a misspelt key is an error
//!   that names it, never a silently ignored setting;
//! - [`resolve`] is pure (the environment comes in as a lookup function) and
//!   rejects every bad value before anything is opened, naming the key;
//! - secrets read from the environment live in [`Secret`], whose `Debug`
//!   and `Display` never show the value.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use outbox::filter::FilterSpec;
use outbox::sink::{JetStreamSinkConfig, WebhookConfig};
use outbox::source::jetstream::JetStreamSourceConfig;
use outbox::{
    BreakerConfig, Error, FailureRatio, OnFull, Ordering, OutboxConfig, RateLimit, Result,
    SinkConfig, SinkName, Start, SyncPolicy,
};
use serde::Deserialize;

use super::LogFormat;
use super::sinks::SinkSpec;

/// Default largest ingest request body: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default drain timeout, in seconds.
pub const DEFAULT_DRAIN_SECS: u64 = 30;

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

/// A value read from the environment that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret bytes, for comparison only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The flags of `outbox run` that can override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--sink NAME=KIND[:ARG]`, parsed.
    pub sinks: Vec<(String, SinkSpec)>,
    /// `--sync`
    pub sync: Option<String>,
    /// `--drain-timeout`
    pub drain_timeout_secs: Option<u64>,
    /// `--ingest-listen`
    pub ingest_listen: Option<String>,
    /// `--admin-listen`
    pub admin_listen: Option<String>,
    /// `--source jetstream:URL/STREAM/CONSUMER`, parsed.
    pub source: Option<JetStreamSourceConfig>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// One sink, ready to build.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkPlan {
    /// Its name.
    pub name: String,
    /// What to build.
    pub spec: SinkSpec,
    /// Delivery settings.
    pub cfg: SinkConfig,
}

/// An HTTP listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenPlan {
    /// Where to bind.
    pub addr: SocketAddr,
    /// The bearer token clients must send, if any.
    pub token: Option<Secret>,
}

/// Ingest settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestPlan {
    /// Listener.
    pub listen: ListenPlan,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// Everything `run` needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Engine settings.
    pub engine: OutboxConfig,
    /// Sinks, in order.
    pub sinks: Vec<SinkPlan>,
    /// Drain timeout at shutdown.
    pub drain_timeout: Duration,
    /// HTTP ingest; `None` reads stdin (or `source`).
    pub ingest: Option<IngestPlan>,
    /// The JetStream source, when `[source] kind = "jetstream"`.
    pub source: Option<JetStreamSourceConfig>,
    /// Admin endpoint.
    pub admin: Option<ListenPlan>,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter when `RUST_LOG` is unset.
    pub log_level: String,
}

/// Reads and parses a config file.
///
/// # Errors
/// [`Error::Config`] naming the file when it cannot be read, and naming the
/// key (with its line) when it does not parse.
pub fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        param: "--config".into(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    parse_file(&text).map_err(|reason| Error::Config {
        param: path.display().to_string(),
        reason,
    })
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

fn cfg_err(param: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        param: param.into(),
        reason: reason.into(),
    }
}

/// Parses `--source jetstream:URL/STREAM/CONSUMER` (the URL without a
/// path, e.g. `jetstream:nats://127.0.0.1:4222/ORDERS/outbox`); every other
/// setting takes its default.
///
/// # Errors
/// [`Error::Config`] naming `--source` when the form does not match or a
/// part is invalid.
pub fn parse_source_flag(spec: &str) -> Result<JetStreamSourceConfig> {
    let bad = |why: String| {
        cfg_err(
            "--source",
            format!("`{spec}`: {why}; expected jetstream:URL/STREAM/CONSUMER"),
        )
    };
    let rest = spec
        .strip_prefix("jetstream:")
        .ok_or_else(|| bad("unknown source kind".into()))?;
    let (rest, consumer) = rest
        .rsplit_once('/')
        .ok_or_else(|| bad("missing /CONSUMER".into()))?;
    let (url, stream) = rest
        .rsplit_once('/')
        .ok_or_else(|| bad("missing /STREAM".into()))?;
    let cfg = JetStreamSourceConfig::new(url, stream, consumer);
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Merges the flags over the file and checks everything. `env` looks up
/// environment variables (for tokens).
///
/// # Errors
/// [`Error::Config`] naming the key: a missing `data_dir`, no sinks, a
/// duplicate or invalid sink name, a `file` sink without `path`, a bad
/// listen address, a token variable that is unset or empty, a non-loopback
/// listener without a token, or any value the engine rejects.
pub fn resolve(
    file: FileConfig,
    flags: Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunPlan> {
    let data_dir = flags.data_dir.or(file.data_dir).ok_or_else(|| {
        cfg_err(
            "data_dir",
            "missing: set `data_dir` in the file or pass --data-dir",
        )
    })?;
    if data_dir.as_os_str().is_empty() {
        return Err(cfg_err("data_dir", "is empty"));
    }
    let sync = match flags.sync.as_deref().or(file.sync.as_deref()) {
        Some(s) => SyncPolicy::parse(s)?,
        None => SyncPolicy::default(),
    };
    let defaults = OutboxConfig::default();
    let engine = OutboxConfig {
        sync,
        cache_bytes: file.cache_bytes.unwrap_or(defaults.cache_bytes),
        max_record_bytes: file.max_record_bytes.unwrap_or(defaults.max_record_bytes),
        idempotency_window: match &file.idempotency_window {
            Some(d) => duration("idempotency_window", d)?,
            None => defaults.idempotency_window,
        },
        orphan_retention: match &file.orphan_retention {
            Some(d) => duration("orphan_retention", d)?,
            None => defaults.orphan_retention,
        },
        ..defaults
    };
    engine.validate()?;

    let mut sinks_out: Vec<SinkPlan> = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in file.sinks.into_iter().enumerate() {
        let plan = sink_plan(i, s)?;
        if !seen.insert(plan.name.clone()) {
            return Err(cfg_err(
                format!("sinks[{i}].name"),
                format!("duplicate sink name `{}`", plan.name),
            ));
        }
        sinks_out.push(plan);
    }
    // A --sink flag replaces a file sink of the same name (with default
    // delivery settings); two flags with one name are an error.
    let mut flag_names = HashSet::new();
    for (name, spec) in flags.sinks {
        if !flag_names.insert(name.clone()) {
            return Err(cfg_err("--sink", format!("duplicate sink name `{name}`")));
        }
        let plan = SinkPlan {
            name: name.clone(),
            spec,
            cfg: SinkConfig::default(),
        };
        match sinks_out.iter_mut().find(|p| p.name == name) {
            Some(existing) => *existing = plan,
            None => sinks_out.push(plan),
        }
    }
    if sinks_out.is_empty() {
        return Err(cfg_err(
            "sinks",
            "no sinks: add a [[sinks]] table or pass --sink NAME=KIND",
        ));
    }

    let ingest_file = file.ingest.unwrap_or_default();
    let ingest_listen = flags.ingest_listen.or(ingest_file.listen);
    let ingest = match ingest_listen {
        Some(l) => {
            let addr = parse_listen("ingest.listen", &l)?;
            let token = token("ingest.token_env", ingest_file.token_env.as_deref(), env)?;
            check_exposure("ingest", addr, token.is_some())?;
            let max_body_bytes = ingest_file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
            if max_body_bytes == 0 {
                return Err(cfg_err("ingest.max_body_bytes", "must be at least 1"));
            }
            Some(IngestPlan {
                listen: ListenPlan { addr, token },
                max_body_bytes,
            })
        }
        None => {
            if ingest_file.token_env.is_some() || ingest_file.max_body_bytes.is_some() {
                return Err(cfg_err(
                    "ingest.listen",
                    "missing: ingest settings are given but no listen address",
                ));
            }
            None
        }
    };
    let admin_file = file.admin.unwrap_or_default();
    let admin = match flags.admin_listen.or(admin_file.listen) {
        Some(l) => {
            let addr = parse_listen("admin.listen", &l)?;
            let token = token("admin.token_env", admin_file.token_env.as_deref(), env)?;
            check_exposure("admin", addr, token.is_some())?;
            Some(ListenPlan { addr, token })
        }
        None => {
            if admin_file.token_env.is_some() {
                return Err(cfg_err(
                    "admin.listen",
                    "missing: admin.token_env is given but no listen address",
                ));
            }
            None
        }
    };
    if let (Some(i), Some(a)) = (&ingest, &admin) {
        if i.listen.addr == a.addr && i.listen.addr.port() != 0 {
            return Err(cfg_err(
                "admin.listen",
                format!("{} is also ingest.listen", a.addr),
            ));
        }
    }
    let file_source = match file.source {
        Some(SourceFile::Jetstream(js)) => Some(js),
        Some(SourceFile::Stdin) | None => None,
    };
    let source = match flags.source.or(file_source) {
        Some(js) => {
            js.validate()?;
            if ingest.is_some() {
                return Err(cfg_err(
                    "source.kind",
                    "`jetstream` and ingest.listen are both set; a daemon reads one source",
                ));
            }
            Some(js)
        }
        None => None,
    };
    let log = file.log.unwrap_or_default();
    let log_format = flags.log_format.unwrap_or(match log.format {
        Some(LogFormatFile::Json) => LogFormat::Json,
        _ => LogFormat::Text,
    });
    let log_level = log.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(cfg_err(
            "log.level",
            format!("`{log_level}` is not a tracing filter (e.g. info, outbox=debug)"),
        ));
    }
    Ok(RunPlan {
        data_dir,
        engine,
        sinks: sinks_out,
        drain_timeout: Duration::from_secs(
            flags
                .drain_timeout_secs
                .or(file.drain_timeout_secs)
                .unwrap_or(DEFAULT_DRAIN_SECS),
        ),
        ingest,
        source,
        admin,
        log_format,
        log_level,
    })
}

fn sink_plan(i: usize, s: SinkFile) -> Result<SinkPlan> {
    SinkName::new(s.name.clone()).map_err(|e| match e {
        Error::Config { reason, .. } => cfg_err(format!("sinks[{i}].name"), reason),
        other => other,
    })?;
    let key = |k: &str| format!("sinks.{}.{k}", s.name);
    let spec = match s.kind {
        SinkKind::Stdout => {
            if s.path.is_some() {
                return Err(cfg_err(key("path"), "only a `file` sink takes a path"));
            }
            SinkSpec::Stdout
        }
        SinkKind::File => match &s.path {
            Some(p) if !p.as_os_str().is_empty() => SinkSpec::File(p.clone()),
            Some(_) => return Err(cfg_err(key("path"), "is empty")),
            None => return Err(cfg_err(key("path"), "missing: a `file` sink needs a path")),
        },
        SinkKind::Jetstream => match &s.jetstream {
            Some(j) => {
                j.validate().map_err(|e| match e {
                    Error::Config { param, reason } => {
                        cfg_err(format!("sinks.{}.{param}", s.name), reason)
                    }
                    other => other,
                })?;
                SinkSpec::JetStream(Box::new(j.clone()))
            }
            None => {
                return Err(cfg_err(
                    key("jetstream"),
                    "missing: a `jetstream` sink needs a [sinks.jetstream] table with url and subject",
                ));
            }
        },
        SinkKind::Webhook => match &s.webhook {
            Some(w) => SinkSpec::Webhook(Box::new(w.clone())),
            None => {
                return Err(cfg_err(
                    key("webhook"),
                    "missing: a `webhook` sink needs a [sinks.webhook] table with url and secret_env",
                ));
            }
        },
    };
    if s.kind != SinkKind::Jetstream && s.jetstream.is_some() {
        return Err(cfg_err(
            key("jetstream"),
            "only a `jetstream` sink takes a [sinks.jetstream] table",
        ));
    }
    if s.kind != SinkKind::Webhook && s.webhook.is_some() {
        return Err(cfg_err(
            key("webhook"),
            "only a `webhook` sink takes a [sinks.webhook] table",
        ));
    }
    if s.retry_schedule.is_some() {
        for (given, name) in [
            (s.retry_max.is_some(), "retry_max"),
            (s.backoff_base_ms.is_some(), "backoff_base_ms"),
            (s.backoff_max_ms.is_some(), "backoff_max_ms"),
        ] {
            if given {
                return Err(cfg_err(
                    key("retry_schedule"),
                    format!(
                        "cannot be combined with {name}: the schedule lists every retry delay, and its length is the retry count"
                    ),
                ));
            }
        }
    }
    let retry_schedule = match &s.retry_schedule {
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, d)| duration(&key(&format!("retry_schedule[{i}]")), d))
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let breaker = match &s.breaker {
        Some(b) => Some(breaker_config(&key("breaker"), b)?),
        None => None,
    };
    let d = SinkConfig::default();
    let ms = Duration::from_millis;
    let cfg = SinkConfig {
        on_full: match s.on_full {
            Some(OnFullFile::Drop) => OnFull::Drop,
            Some(OnFullFile::Block) | None => OnFull::Block,
        },
        max_lag_records: match s.max_lag_records {
            Some(0) => None,
            Some(n) => Some(n),
            None => d.max_lag_records,
        },
        max_lag_bytes: s.max_lag_bytes.filter(|n| *n > 0),
        batch_max: s.batch_max.unwrap_or(d.batch_max),
        ordering: match &s.ordering {
            Some(o) => Ordering::parse(o, &key("ordering"))?,
            None => d.ordering,
        },
        max_in_flight: s.max_in_flight,
        retry_max: s.retry_max.unwrap_or(d.retry_max),
        backoff_base: s.backoff_base_ms.map(ms).unwrap_or(d.backoff_base),
        backoff_max: s.backoff_max_ms.map(ms).unwrap_or(d.backoff_max),
        retry_after_max: s.retry_after_max_ms.map(ms).unwrap_or(d.retry_after_max),
        start: match s.start {
            Some(StartFile::Earliest) => Start::Earliest,
            Some(StartFile::Head) | None => Start::Head,
        },
        retry_schedule,
        breaker,
        rate_limit: s.rate_limit.as_ref().map(|r| RateLimit {
            per_second: r.per_second,
            burst: r.burst.unwrap_or(r.per_second),
        }),
        filter: s.filter.clone(),
    };
    cfg.validate(&s.name)?;
    Ok(SinkPlan {
        name: s.name,
        spec,
        cfg,
    })
}

/// A duration as humans write it (`5s`, `5m`, `1h 30m`, `250ms`).
fn duration(key: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        cfg_err(
            key,
            format!("`{text}` is not a duration such as 5s, 5m, 2h or 250ms: {e}"),
        )
    })
}

fn breaker_config(key: &str, b: &BreakerFile) -> Result<BreakerConfig> {
    let failure_ratio = match (b.failure_percent, b.failure_window) {
        (Some(percent), window) => Some(FailureRatio {
            percent: u8::try_from(percent).map_err(|_| {
                cfg_err(
                    format!("{key}.failure_percent"),
                    format!("{percent} is not between 1 and 100"),
                )
            })?,
            window: window.unwrap_or(FailureRatio::DEFAULT_WINDOW),
        }),
        (None, Some(_)) => {
            return Err(cfg_err(
                format!("{key}.failure_window"),
                "needs failure_percent",
            ));
        }
        (None, None) => None,
    };
    Ok(BreakerConfig {
        consecutive_failures: b.consecutive_failures,
        failure_ratio,
        probe_interval: match &b.probe_interval {
            Some(text) => duration(&format!("{key}.probe_interval"), text)?,
            None => BreakerConfig::DEFAULT_PROBE_INTERVAL,
        },
    })
}

/// `HOST:PORT`, `[V6]:PORT`, or a bare `PORT` (bound on 127.0.0.1).
fn parse_listen(key: &str, s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    s.parse::<SocketAddr>().map_err(|_| {
        cfg_err(
            key,
            format!("`{s}` is not HOST:PORT with a numeric host (e.g. 127.0.0.1:8080) or a port"),
        )
    })
}

fn token(
    key: &str,
    var: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>> {
    let Some(var) = var else {
        return Ok(None);
    };
    if var.is_empty() {
        return Err(cfg_err(
            key,
            "is empty; give the name of an environment variable",
        ));
    }
    match env(var) {
        Some(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
        // The variable's name is safe to print, its value is not.
        Some(_) => Err(cfg_err(key, format!("environment variable {var} is empty"))),
        None => Err(cfg_err(
            key,
            format!("environment variable {var} is not set"),
        )),
    }
}

/// A listener reachable from other hosts must require a token.
fn check_exposure(section: &str, addr: SocketAddr, has_token: bool) -> Result<()> {
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(cfg_err(
        format!("{section}.token_env"),
        format!(
            "{section}.listen {addr} is not a loopback address; set {section}.token_env to require a bearer token"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn plan(text: &str) -> Result<RunPlan> {
        let f = parse_file(text).map_err(|r| cfg_err("file", r))?;
        resolve(f, Overrides::default(), &no_env)
    }

    const MINIMAL: &str = r#"
data_dir = "/tmp/x"
[[sinks]]
name = "out"
kind = "stdout"
"#;

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let p = plan(MINIMAL).unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(p.engine, OutboxConfig::default());
        assert_eq!(p.sinks.len(), 1);
        assert_eq!(p.sinks[0].name, "out");
        assert_eq!(p.sinks[0].spec, SinkSpec::Stdout);
        assert_eq!(p.sinks[0].cfg, SinkConfig::default());
        assert_eq!(p.drain_timeout, Duration::from_secs(DEFAULT_DRAIN_SECS));
        assert!(p.ingest.is_none() && p.admin.is_none());
        assert_eq!(p.log_format, LogFormat::Text);
    }

    #[test]
    fn every_sink_setting_maps_onto_sink_config() {
        let p = plan(
            r#"
data_dir = "d"
sync = "interval:20"
cache_bytes = 2097152
max_record_bytes = 1000
[[sinks]]
name = "f"
kind = "file"
path = "/tmp/f.ndjson"
on_full = "drop"
max_lag_records = 10
max_lag_bytes = 4096
batch_max = 7
retry_max = 0
backoff_base_ms = 5
backoff_max_ms = 50
retry_after_max_ms = 60
start = "earliest"
"#,
        )
        .unwrap();
        assert_eq!(
            p.engine.sync,
            SyncPolicy::Interval(Duration::from_millis(20))
        );
        assert_eq!(p.engine.cache_bytes, 2 << 20);
        assert_eq!(p.engine.max_record_bytes, 1000);
        let s = &p.sinks[0];
        assert_eq!(s.spec, SinkSpec::File("/tmp/f.ndjson".into()));
        assert_eq!(
            s.cfg,
            SinkConfig {
                on_full: OnFull::Drop,
                max_lag_records: Some(10),
                max_lag_bytes: Some(4096),
                batch_max: 7,
                retry_max: 0,
                backoff_base: Duration::from_millis(5),
                backoff_max: Duration::from_millis(50),
                retry_after_max: Duration::from_millis(60),
                start: Start::Earliest,
                ..SinkConfig::default()
            }
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse_file("data_dir = \"d\"\ncolour = 1\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e =
            parse_file("[[sinks]]\nname = \"a\"\nkind = \"stdout\"\nretries = 3\n").unwrap_err();
        assert!(e.contains("retries"), "{e}");
        let e = parse_file("[ingest]\nlisten = \"1\"\nport = 3\n").unwrap_err();
        assert!(e.contains("port"), "{e}");
        let e = parse_file("[[sinks]]\nname = \"a\"\nkind = \"ftp\"\n").unwrap_err();
        assert!(e.contains("ftp"), "{e}");
        let e = parse_file(
            "[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n[sinks.webhook]\nurl = \"http://x\"\nsecret_env = \"S\"\nretry = 1\n",
        )
        .unwrap_err();
        assert!(e.contains("retry"), "{e}");
    }

    #[test]
    fn duplicate_names_missing_paths_and_bad_names_are_named() {
        let e = plan(&format!(
            "{MINIMAL}[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sinks[1].name") && e.contains("duplicate sink name `out`"),
            "{e}"
        );
        let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"f\"\nkind = \"file\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sinks.f.path") && e.contains("missing"), "{e}");
        let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"a b\"\nkind = \"stdout\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sinks[0].name"), "{e}");
        let e = plan("[[sinks]]\nname = \"a\"\nkind = \"stdout\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data_dir"), "{e}");
        let e = plan("data_dir = \"d\"\n").unwrap_err().to_string();
        assert!(e.contains("sinks"), "{e}");
        let e = plan(&format!("{MINIMAL}batch_max = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sinks.out.batch_max"), "{e}");
    }

    #[test]
    fn webhook_sinks_embed_their_config() {
        let p = plan(
            "data_dir = \"d\"\n[[sinks]]\nname = \"w\"\nkind = \"webhook\"\nretry_max = 2\n[sinks.webhook]\nurl = \"http://127.0.0.1:9/h\"\nsecret_env = \"HOOK\"\ntimeout_ms = 500\n",
        )
        .unwrap();
        let mut want = WebhookConfig::new("http://127.0.0.1:9/h", "HOOK");
        want.timeout_ms = 500;
        assert_eq!(p.sinks[0].spec, SinkSpec::Webhook(Box::new(want)));
        assert_eq!(p.sinks[0].cfg.retry_max, 2);
        let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sinks.w.webhook") && e.contains("missing"),
            "{e}"
        );
        let e = plan(&format!(
            "{MINIMAL}[sinks.webhook]\nurl = \"http://x\"\nsecret_env = \"S\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sinks.out.webhook"), "{e}");
    }

    #[test]
    fn a_jetstream_source_and_sink_take_every_key() {
        let p = plan(
            r#"
data_dir = "d"
[source]
kind = "jetstream"
url = "nats://127.0.0.1:4222"
stream = "ORDERS"
consumer = "outbox"
ack = "accepted"
filter_subject = "orders.>"
validate = "none"
ack_wait_ms = 5000
max_ack_pending = 64
[[sinks]]
name = "js"
kind = "jetstream"
[sinks.jetstream]
url = "nats://127.0.0.1:4222"
subject = "out.orders"
timeout_ms = 700
"#,
        )
        .unwrap();
        let mut want = JetStreamSourceConfig::new("nats://127.0.0.1:4222", "ORDERS", "outbox");
        want.ack = outbox::source::jetstream::AckMode::Accepted;
        want.filter_subject = Some("orders.>".into());
        want.validate = outbox::source::jetstream::Validate::None;
        want.ack_wait_ms = 5000;
        want.max_ack_pending = 64;
        assert_eq!(p.source, Some(want));
        let mut sink = JetStreamSinkConfig::new("nats://127.0.0.1:4222", "out.orders");
        sink.timeout_ms = 700;
        assert_eq!(p.sinks[0].spec, SinkSpec::JetStream(Box::new(sink)));

        // The defaults, and stdin when there is no [source].
        let p = plan("data_dir = \"d\"\n[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\nstream = \"S\"\nconsumer = \"c\"\n[[sinks]]\nname = \"o\"\nkind = \"stdout\"\n").unwrap();
        assert_eq!(
            p.source,
            Some(JetStreamSourceConfig::new("nats://h", "S", "c"))
        );
        assert_eq!(plan(MINIMAL).unwrap().source, None);
    }

    #[test]
    fn jetstream_mistakes_are_named() {
        let src = "[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\nstream = \"S\"\nconsumer = \"c\"\n";
        let e = parse_file(&format!("{src}acks = \"delivered\"\n")).unwrap_err();
        assert!(e.contains("acks"), "{e}");
        let e = parse_file(&format!("{src}ack = \"later\"\n")).unwrap_err();
        assert!(e.contains("later"), "{e}");
        let e = parse_file("[source]\nkind = \"kafka\"\n").unwrap_err();
        assert!(e.contains("kafka"), "{e}");
        let e = parse_file("[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\n").unwrap_err();
        assert!(e.contains("stream"), "{e}");
        let e = plan(&format!("{MINIMAL}{}", src.replace("\"S\"", "\"a.b\"")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.stream"), "{e}");
        let e = plan(&format!("{MINIMAL}[ingest]\nlisten = \"0\"\n{src}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source.kind") && e.contains("ingest.listen"),
            "{e}"
        );
        let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"j\"\nkind = \"jetstream\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sinks.j.jetstream") && e.contains("missing"),
            "{e}"
        );
        let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"j\"\nkind = \"jetstream\"\n[sinks.jetstream]\nurl = \"nats://h\"\nsubject = \"a.*\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sinks.j.jetstream.subject") && e.contains("wildcard"),
            "{e}"
        );
        let e = plan(&format!(
            "{MINIMAL}[sinks.jetstream]\nurl = \"nats://h\"\nsubject = \"a\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sinks.out.jetstream"), "{e}");
    }

    #[test]
    fn the_source_flag_parses_and_overrides_the_file() {
        assert_eq!(
            parse_source_flag("jetstream:nats://127.0.0.1:4222/ORDERS/outbox").unwrap(),
            JetStreamSourceConfig::new("nats://127.0.0.1:4222", "ORDERS", "outbox")
        );
        for bad in [
            "kafka:x/y/z",
            "jetstream:nats://h",
            "jetstream:S/c",
            "jetstream:nats://h/a.b/c",
            "jetstream:nats://h/S/",
        ] {
            let e = parse_source_flag(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("--source"), "{e}");
        }
        let flags = Overrides {
            source: Some(JetStreamSourceConfig::new("nats://f", "F", "f")),
            ..Overrides::default()
        };
        let file = parse_file(&format!(
            "{MINIMAL}[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\nstream = \"S\"\nconsumer = \"c\"\n"
        ))
        .unwrap();
        let p = resolve(file, flags, &no_env).unwrap();
        assert_eq!(p.source.unwrap().url, "nats://f");
    }

    #[test]
    fn flags_override_the_file() {
        let f = parse_file(&format!("{MINIMAL}\n")).unwrap();
        let flags = Overrides {
            data_dir: Some("/other".into()),
            sinks: vec![
                ("out".into(), SinkSpec::File("/o".into())),
                ("extra".into(), SinkSpec::Stdout),
            ],
            sync: Some("full".into()),
            drain_timeout_secs: Some(3),
            ingest_listen: Some("9000".into()),
            admin_listen: None,
            source: None,
            log_format: Some(LogFormat::Json),
        };
        let p = resolve(f, flags, &no_env).unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/other"));
        assert_eq!(p.engine.sync, SyncPolicy::Full);
        let names: Vec<_> = p.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["out", "extra"]);
        assert_eq!(p.sinks[0].spec, SinkSpec::File("/o".into()));
        assert_eq!(p.drain_timeout, Duration::from_secs(3));
        assert_eq!(
            p.ingest.unwrap().listen.addr,
            "127.0.0.1:9000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(p.log_format, LogFormat::Json);
    }

    #[test]
    fn tokens_come_from_the_environment_and_never_print() {
        let text = format!("{MINIMAL}[ingest]\nlisten = \"0.0.0.0:8080\"\ntoken_env = \"TOK\"\n");
        let env = |k: &str| (k == "TOK").then(|| "s3cret-value".to_string());
        let p = resolve(parse_file(&text).unwrap(), Overrides::default(), &env).unwrap();
        let i = p.ingest.unwrap();
        assert_eq!(i.listen.token.as_ref().unwrap().expose(), b"s3cret-value");
        assert!(!format!("{:?}", i).contains("s3cret"));
        // Unset variable: named, no value printed.
        let e = resolve(parse_file(&text).unwrap(), Overrides::default(), &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ingest.token_env") && e.contains("TOK is not set"),
            "{e}"
        );
        // Non-loopback without a token is refused.
        let text = format!("{MINIMAL}[ingest]\nlisten = \"0.0.0.0:8080\"\n");
        let e = plan(&text).unwrap_err().to_string();
        assert!(
            e.contains("ingest.token_env") && e.contains("loopback"),
            "{e}"
        );
    }

    #[test]
    fn listen_addresses_parse() {
        let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(parse_listen("k", "8080").unwrap(), lo(8080));
        assert_eq!(parse_listen("k", "localhost:81").unwrap(), lo(81));
        assert_eq!(parse_listen("k", "127.0.0.1:0").unwrap(), lo(0));
        assert!(parse_listen("k", "[::1]:9").unwrap().ip().is_loopback());
        let e = parse_listen("ingest.listen", "example.com:80")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ingest.listen"), "{e}");
    }

    const HOOK: &str = "data_dir = \"d\"\n[[sinks]]\nname = \"hook\"\nkind = \"stdout\"\n";

    #[test]
    fn delivery_features_parse_into_sink_config() {
        let p = plan(&format!(
            r#"{HOOK}retry_schedule = ["5s", "5m", "30m", "2h", "1h 30m", "250ms"]
retry_after_max_ms = 60000
[sinks.breaker]
consecutive_failures = 20
failure_percent = 50
failure_window = 200
probe_interval = "45s"
[sinks.rate_limit]
per_second = 10
burst = 40
[sinks.filter.headers]
event-type = ["alert.*", "incident.opened"]
tenant = ["blue"]
[sinks.filter.json]
"/severity" = ["high", "critical"]
"#
        ))
        .unwrap();
        let cfg = &p.sinks[0].cfg;
        let s = Duration::from_secs;
        assert_eq!(
            cfg.retry_schedule,
            Some(vec![
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(5400),
                Duration::from_millis(250)
            ])
        );
        assert_eq!(cfg.retry_after_max, s(60));
        assert_eq!(
            cfg.breaker,
            Some(BreakerConfig {
                consecutive_failures: Some(20),
                failure_ratio: Some(FailureRatio {
                    percent: 50,
                    window: 200
                }),
                probe_interval: s(45),
            })
        );
        assert_eq!(
            cfg.rate_limit,
            Some(RateLimit {
                per_second: 10,
                burst: 40
            })
        );
        let f = cfg.filter.as_ref().unwrap();
        assert_eq!(
            f.to_string(),
            "event-type=alert.*|incident.opened AND tenant=blue AND /severity=high|critical"
        );
    }

    #[test]
    fn delivery_feature_defaults() {
        let p = plan(&format!(
            "{HOOK}[sinks.breaker]\nconsecutive_failures = 3\n[sinks.rate_limit]\nper_second = 7\n"
        ))
        .unwrap();
        let cfg = &p.sinks[0].cfg;
        assert_eq!(
            cfg.breaker,
            Some(BreakerConfig {
                consecutive_failures: Some(3),
                failure_ratio: None,
                probe_interval: Duration::from_secs(30),
            })
        );
        assert_eq!(
            cfg.rate_limit,
            Some(RateLimit {
                per_second: 7,
                burst: 7
            })
        );
        let p = plan(&format!("{HOOK}[sinks.breaker]\nfailure_percent = 90\n")).unwrap();
        assert_eq!(
            p.sinks[0].cfg.breaker.as_ref().unwrap().failure_ratio,
            Some(FailureRatio {
                percent: 90,
                window: 100
            })
        );
        let p = plan(HOOK).unwrap();
        let cfg = &p.sinks[0].cfg;
        assert!(cfg.retry_schedule.is_none() && cfg.breaker.is_none());
        assert!(cfg.rate_limit.is_none() && cfg.filter.is_none());
    }

    #[test]
    fn bad_delivery_feature_values_name_the_key() {
        for (extra, want) in [
            (
                "retry_schedule = [\"5s\", \"5x\"]\n",
                "sinks.hook.retry_schedule[1]: `5x` is not a duration",
            ),
            (
                "retry_schedule = [\"-1s\"]\n",
                "sinks.hook.retry_schedule[0]",
            ),
            (
                "retry_schedule = []\n",
                "sinks.hook.retry_schedule: must list at least one delay",
            ),
            (
                "retry_schedule = [\"5s\"]\nretry_max = 3\n",
                "sinks.hook.retry_schedule: cannot be combined with retry_max",
            ),
            (
                "retry_schedule = [\"5s\"]\nbackoff_base_ms = 3\n",
                "cannot be combined with backoff_base_ms",
            ),
            (
                "retry_schedule = [\"5s\"]\nbackoff_max_ms = 3\n",
                "cannot be combined with backoff_max_ms",
            ),
            (
                "[sinks.breaker]\nprobe_interval = \"10s\"\n",
                "sinks.hook.breaker: set consecutive_failures or failure_percent",
            ),
            (
                "[sinks.breaker]\nconsecutive_failures = 0\n",
                "sinks.hook.breaker.consecutive_failures: must be at least 1",
            ),
            (
                "[sinks.breaker]\nfailure_percent = 300\n",
                "sinks.hook.breaker.failure_percent: 300 is not between 1 and 100",
            ),
            (
                "[sinks.breaker]\nfailure_percent = 0\n",
                "sinks.hook.breaker.failure_percent: 0 is not between 1 and 100",
            ),
            (
                "[sinks.breaker]\nfailure_window = 10\n",
                "sinks.hook.breaker.failure_window: needs failure_percent",
            ),
            (
                "[sinks.breaker]\nfailure_percent = 5\nfailure_window = 0\n",
                "sinks.hook.breaker.failure_window",
            ),
            (
                "[sinks.breaker]\nconsecutive_failures = 1\nprobe_interval = \"soon\"\n",
                "sinks.hook.breaker.probe_interval: `soon` is not a duration",
            ),
            (
                "[sinks.breaker]\nconsecutive_failures = 1\nprobe_interval = \"0s\"\n",
                "sinks.hook.breaker.probe_interval: must be above zero",
            ),
            (
                "[sinks.rate_limit]\nper_second = 0\n",
                "sinks.hook.rate_limit.per_second: must be at least 1",
            ),
            (
                "[sinks.rate_limit]\nper_second = 5\nburst = 0\n",
                "sinks.hook.rate_limit.burst: must be at least 1",
            ),
            (
                "[sinks.filter.headers]\nevent-type = [\"a[\"]\n",
                "sinks.hook.filter.headers.event-type[0]: `a[` is not a valid pattern",
            ),
            (
                "[sinks.filter.headers]\nevent-type = []\n",
                "sinks.hook.filter.headers.event-type: lists no pattern",
            ),
            (
                "[sinks.filter.json]\n\"severity\" = [\"high\"]\n",
                "sinks.hook.filter.json.severity: is not a JSON pointer",
            ),
        ] {
            let e = plan(&format!("{HOOK}{extra}")).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{extra}");
            let e = e.to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        // Unknown keys inside the new tables are refused by the parser.
        for (extra, key) in [
            ("[sinks.breaker]\nthreshold = 3\n", "threshold"),
            (
                "[sinks.rate_limit]\nper_second = 1\nper_minute = 3\n",
                "per_minute",
            ),
            ("[sinks.filter]\nevent-type = [\"a\"]\n", "event-type"),
        ] {
            let e = parse_file(&format!("{HOOK}{extra}")).unwrap_err();
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
        }
        let e = parse_file(&format!("{HOOK}[sinks.rate_limit]\nburst = 3\n")).unwrap_err();
        assert!(e.contains("missing field `per_second`"), "{e}");
    }

    #[test]
    fn webhook_secrets_with_expiry_parse() {
        let p = plan(
            r#"data_dir = "d"
[[sinks]]
name = "w"
kind = "webhook"
[sinks.webhook]
url = "http://127.0.0.1:9/h"
secrets = [
  { env = "NEW" },
  { env = "OLD", expires_at = "2025-07-01T00:00:00Z" },
]
"#,
        )
        .unwrap();
        let SinkSpec::Webhook(w) = &p.sinks[0].spec else {
            panic!("not a webhook: {:?}", p.sinks[0].spec);
        };
        assert!(w.secret_env.is_empty());
        assert_eq!(
            w.secrets,
            vec![
                outbox::sink::webhook::SecretSpec::new("NEW"),
                outbox::sink::webhook::SecretSpec::expiring(
                    "OLD",
                    std::time::UNIX_EPOCH + Duration::from_secs(1_751_328_000)
                ),
            ]
        );
        let e = parse_file(
            "[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n[sinks.webhook]\nurl = \"http://x\"\nsecrets = [{ env = \"A\", expires_at = \"next week\" }]\n",
        )
        .unwrap_err();
        assert!(e.contains("`next week` is not an RFC 3339 time"), "{e}");
    }
}
