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

use outbox::sink::WebhookConfig;
use outbox::{Error, OnFull, OutboxConfig, Result, SinkConfig, SinkName, Start, SyncPolicy};
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
    /// HTTP ingest; absent means stdin.
    pub ingest: Option<IngestFile>,
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
    /// `block` (default) or `drop`.
    pub on_full: Option<OnFullFile>,
    /// Lag limit in records; 0 means no limit. Default 1,000,000.
    pub max_lag_records: Option<u64>,
    /// Lag limit in bytes; 0 or absent means no limit.
    pub max_lag_bytes: Option<u64>,
    /// Records per offset commit. Default 256.
    pub batch_max: Option<usize>,
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
    /// HTTP ingest; `None` reads stdin.
    pub ingest: Option<IngestPlan>,
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
        None => SyncPolicy::Always,
    };
    let defaults = OutboxConfig::default();
    let engine = OutboxConfig {
        sync,
        cache_bytes: file.cache_bytes.unwrap_or(defaults.cache_bytes),
        max_record_bytes: file.max_record_bytes.unwrap_or(defaults.max_record_bytes),
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
    if s.kind != SinkKind::Webhook && s.webhook.is_some() {
        return Err(cfg_err(
            key("webhook"),
            "only a `webhook` sink takes a [sinks.webhook] table",
        ));
    }
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
        retry_max: s.retry_max.unwrap_or(d.retry_max),
        backoff_base: s.backoff_base_ms.map(ms).unwrap_or(d.backoff_base),
        backoff_max: s.backoff_max_ms.map(ms).unwrap_or(d.backoff_max),
        retry_after_max: s.retry_after_max_ms.map(ms).unwrap_or(d.retry_after_max),
        start: match s.start {
            Some(StartFile::Earliest) => Start::Earliest,
            Some(StartFile::Head) | None => Start::Head,
        },
    };
    cfg.validate(&s.name)?;
    Ok(SinkPlan {
        name: s.name,
        spec,
        cfg,
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
}
