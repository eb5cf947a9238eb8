//! Resolution: the file and the flags merged into a [`RunPlan`], every
//! value checked before anything is opened. Pure: the environment comes in
//! as a lookup function.

use std::collections::HashSet;
use std::time::Duration;

use outbox::source::jetstream::JetStreamSourceConfig;
use outbox::{
    BreakerConfig, ConfigError, Error, FailureRatio, OnFull, Ordering, OutboxConfig, RateLimit,
    Result, SinkConfig, SinkName, Start, SyncPolicy,
};

use super::listen::{check_exposure, parse_listen};
use super::plan::{
    DEFAULT_DRAIN_SECS, DEFAULT_MAX_BODY_BYTES, IngestPlan, ListenPlan, Overrides, RunPlan,
    SinkPlan,
};
use super::schema::{
    BreakerFile, FileConfig, LogFormatFile, OnFullFile, SinkFile, SinkKind, SourceFile, StartFile,
};
use super::secret::token;
use crate::cli::LogFormat;
use crate::cli::sinks::SinkSpec;

/// Parses `--source jetstream:URL/STREAM/CONSUMER` (the URL without a
/// path, e.g. `jetstream:nats://127.0.0.1:4222/ORDERS/outbox`); every other
/// setting takes its default.
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] naming `--source` when the form does not
/// match or a part is invalid.
pub fn parse_source_flag(spec: &str) -> Result<JetStreamSourceConfig> {
    let bad = |why: String| {
        Error::config(
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
/// [`outbox::ConfigError::Invalid`] naming the key: a missing `data_dir`, no
/// sinks, a duplicate or invalid sink name, a `file` sink without `path`, a
/// bad listen address, a token variable that is unset or empty, a
/// non-loopback listener without a token, or any value the engine rejects.
pub fn resolve(
    file: FileConfig,
    flags: Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunPlan> {
    let data_dir = flags.data_dir.or(file.data_dir).ok_or_else(|| {
        Error::config(
            "data_dir",
            "missing: set `data_dir` in the file or pass --data-dir",
        )
    })?;
    if data_dir.as_os_str().is_empty() {
        return Err(Error::config("data_dir", "is empty"));
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
            return Err(Error::config(
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
            return Err(Error::config(
                "--sink",
                format!("duplicate sink name `{name}`"),
            ));
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
        return Err(Error::config(
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
                return Err(Error::config("ingest.max_body_bytes", "must be at least 1"));
            }
            Some(IngestPlan {
                listen: ListenPlan { addr, token },
                max_body_bytes,
            })
        }
        None => {
            if ingest_file.token_env.is_some() || ingest_file.max_body_bytes.is_some() {
                return Err(Error::config(
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
                return Err(Error::config(
                    "admin.listen",
                    "missing: admin.token_env is given but no listen address",
                ));
            }
            None
        }
    };
    if let (Some(i), Some(a)) = (&ingest, &admin)
        && i.listen.addr == a.addr
        && i.listen.addr.port() != 0
    {
        return Err(Error::config(
            "admin.listen",
            format!("{} is also ingest.listen", a.addr),
        ));
    }
    let file_source = match file.source {
        Some(SourceFile::Jetstream(js)) => Some(js),
        Some(SourceFile::Stdin) | None => None,
    };
    let source = match flags.source.or(file_source) {
        Some(js) => {
            js.validate()?;
            if ingest.is_some() {
                return Err(Error::config(
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
        return Err(Error::config(
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
        ConfigError::Invalid { reason, .. } => {
            ConfigError::invalid(format!("sinks[{i}].name"), reason)
        }
        other => other,
    })?;
    let key = |k: &str| format!("sinks.{}.{k}", s.name);
    let spec = match s.kind {
        SinkKind::Stdout => {
            if s.path.is_some() {
                return Err(Error::config(
                    key("path"),
                    "only a `file` sink takes a path",
                ));
            }
            SinkSpec::Stdout
        }
        SinkKind::File => match &s.path {
            Some(p) if !p.as_os_str().is_empty() => SinkSpec::File(p.clone()),
            Some(_) => return Err(Error::config(key("path"), "is empty")),
            None => {
                return Err(Error::config(
                    key("path"),
                    "missing: a `file` sink needs a path",
                ));
            }
        },
        SinkKind::Jetstream => match &s.jetstream {
            Some(j) => {
                j.validate().map_err(|e| match e {
                    ConfigError::Invalid { param, reason } => {
                        ConfigError::invalid(format!("sinks.{}.{param}", s.name), reason)
                    }
                    other => other,
                })?;
                SinkSpec::JetStream(Box::new(j.clone()))
            }
            None => {
                return Err(Error::config(
                    key("jetstream"),
                    "missing: a `jetstream` sink needs a [sinks.jetstream] table with url and subject",
                ));
            }
        },
        SinkKind::Webhook => match &s.webhook {
            Some(w) => SinkSpec::Webhook(Box::new(w.clone())),
            None => {
                return Err(Error::config(
                    key("webhook"),
                    "missing: a `webhook` sink needs a [sinks.webhook] table with url and secret_env",
                ));
            }
        },
    };
    if s.kind != SinkKind::Jetstream && s.jetstream.is_some() {
        return Err(Error::config(
            key("jetstream"),
            "only a `jetstream` sink takes a [sinks.jetstream] table",
        ));
    }
    if s.kind != SinkKind::Webhook && s.webhook.is_some() {
        return Err(Error::config(
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
                return Err(Error::config(
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
        Error::config(
            key,
            format!("`{text}` is not a duration such as 5s, 5m, 2h or 250ms: {e}"),
        )
    })
}

fn breaker_config(key: &str, b: &BreakerFile) -> Result<BreakerConfig> {
    let failure_ratio = match (b.failure_percent, b.failure_window) {
        (Some(percent), window) => Some(FailureRatio {
            percent: u8::try_from(percent).map_err(|_| {
                Error::config(
                    format!("{key}.failure_percent"),
                    format!("{percent} is not between 1 and 100"),
                )
            })?,
            window: window.unwrap_or(FailureRatio::DEFAULT_WINDOW),
        }),
        (None, Some(_)) => {
            return Err(Error::config(
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
